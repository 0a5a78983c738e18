"""The backbone budget: samples forwarded and input gradients, counted and enforced.

Extraction loops, written as a site would write them, are refused mid-way at the budget;
a served runtime keeps each user's count across reconnects, whatever the client resets. (A
run within the default budget, and the spend it reports: tests/fl/test_federation.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedgray.backbone import QueryBudgetExceeded, load_sealed
from fedgray.backbone.budget import Budget, Meter, Spend
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from tests.backbone.attacks import ServeMicro


def test_a_distillation_loop_is_refused_at_the_sample_budget() -> None:
    """The site asks for features of random images, batch after batch, to train a copy."""
    backbone = load_sealed("fedgray-micro", None, level="gray", sample_budget=1000)
    collected = []
    with pytest.raises(QueryBudgetExceeded) as refusal:
        for _ in range(100):
            with torch.no_grad():
                collected.append(backbone.encode_image(torch.rand(128, 3, 32, 32)))
    assert len(collected) == 7  # 896 samples; the eighth batch would make 1,024
    message = str(refusal.value)
    assert message.startswith("backbone.sample_budget: the sample budget of 1,000 samples")
    assert "\n" not in message
    assert backbone.spent == Spend(queries=7, samples=896, gradients=0)
    backbone.encode_image(torch.rand(104, 3, 32, 32))  # what is left can still be spent
    assert backbone.spent.samples == 1000


def test_an_embedding_row_fit_is_refused_at_the_gradient_budget() -> None:
    """The site fits a per-position shift by gradient descent through the text tower
    (each step: 8 contexts with input gradients), as the extraction benchmark does."""
    backbone = load_sealed("fedgray-micro", None, level="gray", gradient_budget=400)
    tokens = backbone.tokenize(["a red circle"] * 8)
    shift = torch.zeros(1, 3, backbone.interface.token_width, requires_grad=True)
    optimizer = torch.optim.Adam([shift], lr=1e-2)
    steps = 0
    with pytest.raises(QueryBudgetExceeded, match=r"backbone.gradient_budget: .* 400 samples"):
        for _ in range(200):
            features = backbone.encode_text(tokens, token_shifts=shift.expand(8, -1, -1))
            loss = features.square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    assert steps == 50 and backbone.spent.gradients == 400
    with torch.no_grad():  # forwards without gradients are the sample budget's
        backbone.encode_text(tokens, token_shifts=shift.expand(8, -1, -1))
    assert backbone.spent == Spend(queries=51, samples=408, gradients=400)


def test_white_is_not_budgeted_and_a_refusal_counts_nothing() -> None:
    white = load_sealed("fedgray-micro", None, level="white", sample_budget=1)
    white.encode_image(torch.rand(4, 3, 32, 32))
    assert white.budget == Budget() and white.spent.samples == 4
    meter = Meter(Budget(samples=10, gradients=5))
    meter.charge(Spend(1, 6, 5))
    with pytest.raises(QueryBudgetExceeded, match="gradient budget of 5"):
        meter.charge(Spend(1, 1, 1))
    assert meter.spent == Spend(1, 6, 5)


@pytest.mark.slow  # a served runtime and three connections
def test_a_served_runtimes_count_survives_reconnects(
    serve_micro: ServeMicro, tmp_path: Path
) -> None:
    socket_path = tmp_path / "runtime.sock"
    serve_micro(socket_path, "--sample-budget", "256", "--gradient-budget", "128")
    first = IsolatedBackbone.connect(socket_path)
    with first:
        pixels = torch.rand(64, 3, 32, 32, requires_grad=True)
        first.encode_image(pixels).sum().backward()
        assert first.spent == Spend(1, 64, 64)
    # The site reconnects: the runtime tells it what its user has spent already.
    with IsolatedBackbone.connect(socket_path) as second:
        assert second.spent == Spend(1, 64, 64)
        assert second.budget == Budget(None, 256, 128)
        second.encode_image(torch.rand(64, 3, 32, 32, requires_grad=True)).sum().backward()
        # It forgets its own count (its bookkeeping is its own) and asks for more.
        second._meter = Meter(Budget())
        with pytest.raises(QueryBudgetExceeded, match="gradient budget of 128"):
            second.encode_image(torch.rand(1, 3, 32, 32, requires_grad=True))
        with torch.no_grad():
            second.encode_image(torch.rand(128, 3, 32, 32))  # 256 samples now
    with IsolatedBackbone.connect(socket_path) as third:
        assert third.spent == Spend(3, 256, 128)
        with pytest.raises(QueryBudgetExceeded, match="sample budget of 256"), torch.no_grad():
            third.encode_image(torch.rand(1, 3, 32, 32))
