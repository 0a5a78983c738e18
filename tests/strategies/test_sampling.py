"""The count of sites a round trains, written once (``fedgray.config``), is what a
Flower strategy built by ``strategies.build_strategy`` samples."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.clientapp import ClientApp

from fedgray.config import sampled_sites
from fedgray.fl.simulation.local_grid import LocalGrid
from strategies import build_strategy


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.74, 1.0])
def test_the_sampled_count_is_what_flower_samples(fraction: float) -> None:
    for num_sites in range(1, 11):
        grid = LocalGrid(ClientApp(), num_sites, record=False)
        strategy = build_strategy("fedavg", num_sites=num_sites, fraction_train=fraction)
        messages = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)
        assert len(list(messages)) == sampled_sites(num_sites, fraction), (num_sites, fraction)
