"""The inversion drivers' DP columns: each epsilon draws its own noise, reproducibly.

With one draw for both epsilons, the noise of the epsilon-8 and epsilon-1 updates differed
only in scale, and the inversion's ratio (a weight row over its bias entry) cancels the
scale: where the noise dominates, both columns recovered the very same rows.
"""

from __future__ import annotations

import torch

from fedgray.privacy.inversion import invert_linear
from simulations.update_inversion import EPSILONS, Update, private_updates

DIM = 64


def _negligible_gradients(count: int) -> list[Update]:
    """Per-sample (weight, bias) gradients far below the noise: what the noise hides."""
    generator = torch.Generator().manual_seed(0)
    return [
        (
            1e-9 * torch.randn(DIM, DIM, generator=generator),
            1e-9 * torch.randn(DIM, generator=generator),
        )
        for _ in range(count)
    ]


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def test_each_epsilon_draws_its_own_noise_so_the_inverted_rows_differ() -> None:
    parts = _negligible_gradients(8)
    (weight_8, bias_8), (weight_1, bias_1) = private_updates(None, [], parts, steps=50, seed=0)
    assert EPSILONS == (8.0, 1.0)
    # independent draws of 64 x 64 normals: |correlation| about 0.016, 1 for a shared draw
    assert abs(_correlation(weight_8, weight_1)) < 0.1
    rows_8, rows_1 = invert_linear(weight_8, bias_8), invert_linear(weight_1, bias_1)
    assert abs(_correlation(rows_8, rows_1)) < 0.1
    # the smaller epsilon gets the larger noise
    assert weight_1.std() > 2 * weight_8.std()


def test_the_noise_of_each_epsilon_is_the_same_in_every_run_and_moves_with_the_seed() -> None:
    parts = _negligible_gradients(8)
    first = private_updates(None, [], parts, steps=50, seed=0)
    again = private_updates(None, [], parts, steps=50, seed=0)
    other = private_updates(None, [], parts, steps=50, seed=1)
    for (weight, bias), (weight_again, bias_again), (weight_other, _) in zip(
        first, again, other, strict=True
    ):
        assert torch.equal(weight, weight_again) and torch.equal(bias, bias_again)
        assert abs(_correlation(weight, weight_other)) < 0.1
