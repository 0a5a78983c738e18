"""Federated CraFT (FedBPT-style): only the search distribution and the refinement MLP travel,
the server's weighted mean of the sites' means, and each site's query budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message

from fedgray.blackbox.federated import MEAN, SIGMA
from fedgray.config_schema import ConfigError
from fedgray.train.kinds import refuse_unsupported
from tests.helpers import assert_close, close, micro_config, run_local

CRAFT = [
    "method.name=craft",
    "train.task=classification",
    "data.dataset=digits",
    "method.craft.queries=20",
    "method.craft.popsize=4",
    "method.craft.intrinsic_dim=8",
    "method.craft.hidden=16",
    "method.craft.sigma=0.2",
]
REFINER = {
    "refiner.net.0.weight",
    "refiner.net.0.bias",
    "refiner.net.2.weight",
    "refiner.net.2.bias",
}


def _weighted_mean(replies: list[Message], key: str) -> np.ndarray:
    weights = [float(m.content["metrics"]["num-examples"]) for m in replies]
    arrays = [m.content["arrays"][key].numpy() for m in replies]
    return sum(w * a for w, a in zip(weights, arrays, strict=True)) / sum(weights)


def test_sites_search_locally_and_the_server_averages_their_distributions(
    tmp_path: Path,
) -> None:
    config = micro_config(tmp_path, *CRAFT)
    result, summary, grid = run_local(config)
    sent = [m for m in grid.sent if m.metadata.message_type == "train"]
    replies = [m for m in grid.received if m.metadata.message_type == "train"]
    assert len(sent) == len(replies) == 6 and not any(m.has_error() for m in replies)
    for message in [*sent, *replies]:
        assert set(message.content["arrays"]) == {MEAN, SIGMA, *REFINER}
    # Round 1's aggregate is what round 2's sites receive; round 2's is the final one.
    globals_after = [sent[3].content["arrays"], result.arrays]
    for rnd, after in enumerate(globals_after):
        site_replies = replies[3 * rnd : 3 * rnd + 3]
        for key in (MEAN, SIGMA, "refiner.net.2.weight"):
            expected = _weighted_mean(site_replies, key)
            assert_close(after[key].numpy(), expected, terms=len(site_replies))
        means = [m.content["arrays"][MEAN].numpy() for m in site_replies]
        assert not close(
            means[0], means[1], terms=len(site_replies)
        )  # each site searched on its own data
    # Per site and round: 1 query for the features, then 3 generations of 4 candidates, the
    # mean and 1 for the augmented features (<= 20); the paper counts the 3 x 4 candidates.
    assert [int(m.content["metrics"]["queries"]) for m in replies] == [19] * 6
    assert [int(m.content["metrics"]["paper_queries"]) for m in replies] == [12] * 6
    records = [r for r in result.records if r["round"] > 0]
    assert [r["queries"] for r in records] == [57, 57] and summary["queries"] == 114
    assert summary["final"]["accuracy"] is not None


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("privacy.enabled=true", "privacy.enabled"),
        ("federation.strategy=fedprox", "federation.strategy"),
        ("federation.secure_aggregation.enabled=true", "federation.secure_aggregation.enabled"),
        ("train.task=retrieval", "train.task"),
    ],
)
def test_what_federated_craft_refuses(tmp_path: Path, override: str, field: str) -> None:
    overrides = [*CRAFT, override]
    if override.startswith("privacy"):
        overrides.append("privacy.noise_multiplier=1.0")
    with pytest.raises(ConfigError, match=f"^{field}: not with method 'craft'"):
        refuse_unsupported(micro_config(tmp_path, *overrides))
