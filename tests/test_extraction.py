"""The extraction benchmarks' attacks run on micro and recover what gray access gives away;
the gray+ entry-point attack spends gradients and stops at the budget."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fedgray.backbone import QueryBudgetExceeded, SealedBackbone, create_clip
from fedgray.backbone.budget import Spend
from fedgray.backbone.loading import get_tokenizer
from simulations.extraction import distill, embedding_row, input_span, seal, tower
from simulations.extraction_entry import entry_gradient_queries, entry_gradients, seal_plus


@pytest.fixture(scope="module")
def victim() -> tuple[SealedBackbone, torch.Tensor, torch.Tensor]:
    """A gray micro backbone, with its true patch filters and token embedding table."""
    torch.manual_seed(0)
    model = create_clip("fedgray-micro", None).eval()
    filters = model.visual.conv1.weight.detach().clone()  # 64 filters of 3 x 8 x 8
    table = model.token_embedding.weight.detach().clone()
    return seal(model, "fedgray-micro"), filters, table


def test_gray_gradients_give_the_input_layer_span_and_an_embedding_row(
    victim: tuple[SealedBackbone, torch.Tensor, torch.Tensor],
) -> None:
    backbone, filters, table = victim
    before = backbone.queries_used
    # One image has 16 patches: too few gradients to span 63 directions; eight have 128.
    assert input_span(backbone, filters, images=1).score > 0.5
    eight = input_span(backbone, filters, images=8)
    assert eight.score < 1e-3 and eight.calls == eight.samples == eight.gradients == 8
    # A random 63-dim subspace of the 192-dim patch space leaves about sqrt(2/3) of them.
    random_span = torch.linalg.qr(torch.randn(192, 63, dtype=torch.double))[0].T
    truth = filters.reshape(64, -1).double()
    truth = truth - truth.mean(0)
    assert (truth - truth @ random_span.T @ random_span).norm() / truth.norm() > 0.7
    row = embedding_row(backbone, table, target=1234, reference=4321, steps=50)
    # one forward of the 8 contexts for the goal, then 50 steps of 8 with gradients
    assert row.score > 0.5 and (row.calls, row.samples, row.gradients) == (51, 408, 400)
    assert backbone.queries_used - before == 1 + 8 + 51


def test_distillation_agreement_is_scored_on_held_out_images(
    victim: tuple[SealedBackbone, torch.Tensor, torch.Tensor],
) -> None:
    backbone = victim[0]
    held_out = torch.rand(32, 3, 32, 32)
    with torch.no_grad():
        teacher = backbone.encode_image(held_out)
    torch.manual_seed(1)
    start: nn.Module = tower(create_clip("fedgray-micro", None)).train()
    scores = []
    for queries in (0, 256):
        result = distill(
            backbone,
            copy.deepcopy(start),
            queries=queries,
            held_out=held_out,
            teacher_held_out=teacher,
            steps=20,
            batch=64,
        )
        assert result.calls == queries // 64 and result.samples == queries
        assert result.gradients == 0  # forward features only
        scores.append(result.score)
    assert -1 <= scores[0] < scores[1] <= 1


def test_the_gray_plus_entry_attacks_spend_gradients_and_stop_at_the_budget() -> None:
    """A gray+ site asks for the gradients at every layer's entry token only (its pixels
    need none): each sample still counts against the gradient budget, and the attack's
    query loop is refused at it, before the call that would pass it."""
    torch.manual_seed(0)
    model = create_clip("fedgray-micro", None).eval()
    backbone = SealedBackbone(
        model, get_tokenizer("fedgray-micro"), name="fedgray-micro", level="gray+",
        gradient_budget=200,
    )  # fmt: skip
    images = torch.rand(192, 3, 32, 32)
    prompts, *_, grads = entry_gradient_queries(backbone, images[:64], batch=32)
    assert grads.shape == prompts.shape == (64, 2, 1, 64) and grads.abs().min() > 0
    assert backbone.spent == Spend(queries=2, samples=64, gradients=64)
    with pytest.raises(QueryBudgetExceeded, match="gradient budget of 200"):
        entry_gradient_queries(backbone, images, batch=64)  # 64 + 64, then 64 refused
    assert backbone.spent == Spend(queries=4, samples=192, gradients=192)
    # The student side runs and is scored like the gray distillation.
    held_out = images[:32]
    with torch.no_grad():
        teacher = backbone.encode_image(held_out)
    start = tower(create_clip("fedgray-micro", None)).train()
    plain = seal_plus(model, "fedgray-micro")
    row = entry_gradients(
        plain, start, queries=64, held_out=held_out, teacher_held_out=teacher, steps=2, batch=32
    )
    assert (row.calls, row.samples, row.gradients) == (2, 64, 64) and -1 <= row.score <= 1
