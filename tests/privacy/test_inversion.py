"""Update inversion, as the server would run it: a site's inputs read from its update of a
linear output adapter; defeated by summing sites' updates or by DP noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedgray.adapters.modules import OutputAdapter
from fedgray.privacy.inversion import best_cosine, invert_linear
from tests.helpers import assert_close

DIM = 32


def _site_update(
    inputs: torch.Tensor, targets: torch.Tensor, lr: float = 0.1
) -> list[torch.Tensor]:
    """One SGD step of an identity-initialised output adapter on a contrastive-style loss:
    the (weight, bias) update the site would send."""
    adapter = OutputAdapter(DIM)
    logits = F.normalize(adapter(inputs), dim=-1) @ F.normalize(targets, dim=-1).T * 10
    F.cross_entropy(logits, torch.arange(len(inputs))).backward()
    return [-lr * p.grad for p in (adapter.weight, adapter.bias)]


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs and their captions' embeddings, plus 3 other captions (negatives)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=generator), torch.randn(n + 3, DIM, generator=generator)


def test_one_samples_update_gives_the_server_its_input_exactly() -> None:
    inputs, targets = _data(1, 0)
    weight, bias = _site_update(inputs, targets)
    recovered = invert_linear(weight, bias)
    assert best_cosine(inputs, recovered).item() > 0.9999
    assert_close(recovered[0], inputs[0], terms=DIM)  # a row of the update over its bias


def test_the_sum_of_many_sites_updates_hides_each_sites_input() -> None:
    inputs, targets = _data(1, 1)
    alone = best_cosine(inputs, invert_linear(*_site_update(inputs, targets))).item()
    others = [_site_update(*_data(1, 100 + s)) for s in range(8)]
    weight, bias = (
        sum(parts) for parts in zip(_site_update(inputs, targets), *others, strict=True)
    )
    summed = best_cosine(inputs, invert_linear(weight, bias)).item()
    assert alone > 0.9999 and summed < 0.9


def test_dp_noise_on_the_update_hides_the_input() -> None:
    inputs, targets = _data(1, 2)
    weight, bias = _site_update(inputs, targets)
    norm = torch.cat([weight.flatten(), bias]).norm()  # the clipping norm this update meets
    generator = torch.Generator().manual_seed(3)
    noisy = [u + norm * torch.randn(u.shape, generator=generator) for u in (weight, bias)]
    random_guess = best_cosine(inputs, torch.randn(DIM, DIM, generator=generator)).item()
    assert best_cosine(inputs, invert_linear(*noisy)).item() < random_guess + 0.2


def test_a_shared_offset_does_not_pass_for_a_reconstruction_once_centered() -> None:
    offset = 10 * torch.ones(DIM)
    truth, wrong = offset + torch.eye(DIM)[0], offset + torch.eye(DIM)[1]
    assert best_cosine(truth[None], wrong[None]).item() > 0.99
    assert best_cosine(truth[None], wrong[None], center=offset).item() == pytest.approx(0.0)
