"""Checkpoint and resume: 2 rounds + 1 resumed round == 3 rounds, strategy state included,
and with ``fraction_train < 1`` the same sites sampled in every round."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.checkpoint import Checkpoint, load_checkpoint
from fedgray.fl.simulation.engine import open_run
from fedgray.fl.simulation.local_grid import LocalGrid
from tests.helpers import micro_config, run_local, run_on

FEDADAM = ["federation.strategy=fedadam", "federation.strategy_options={eta: 0.01}"]


def test_resumed_run_ends_with_the_same_adapters(tmp_path: Path) -> None:
    full, _, _ = run_local(micro_config(tmp_path, *FEDADAM, "federation.num_rounds=3", name="a"))

    run_local(micro_config(tmp_path, *FEDADAM, name="b"))
    checkpoint = load_checkpoint(tmp_path / "b")
    assert checkpoint.round == 2 and checkpoint.strategy == "fedadam"
    assert {"m_t", "v_t"} <= set(checkpoint.strategy_state)
    config, run = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "b")
    resumed, _, _ = run_local(config)

    assert [r["sites_trained"] for r in full.records] == [0, 3, 3, 3]
    assert [r["sites_trained"] for r in resumed.records] == [0, 3, 3, 3]
    a, b = from_record(full.arrays), from_record(resumed.arrays)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rounds = [
        json.loads(x)["round"] for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    ]
    assert rounds == [0, 1, 2, 3]


def test_fresh_run_refuses_a_folder_with_a_checkpoint(tmp_path: Path) -> None:
    run_local(micro_config(tmp_path, "federation.num_rounds=1"))
    config_file = tmp_path / "run" / "config.yaml"
    with pytest.raises(ValueError, match="already holds a run"):
        open_run(str(config_file), [], resume=None)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        open_run(None, [], resume=tmp_path / "nothing")


def test_resume_needs_the_strategy_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full, _, _ = run_local(micro_config(tmp_path, *FEDADAM, "federation.num_rounds=3", name="a"))
    run_local(micro_config(tmp_path, *FEDADAM, name="b"))
    monkeypatch.setattr(Checkpoint, "restore", lambda self, strategy: None)
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "b")
    forgetful, _, _ = run_local(config)
    a, b = from_record(full.arrays), from_record(forgetful.arrays)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # FedAdam's moments matter


def _grid(config: object, node_ids: list[int]) -> LocalGrid:
    """4 sites whose node ids are ``node_ids`` (partition ``i`` gets ``node_ids[i]``), as
    Flower draws new ones for every run."""
    grid = LocalGrid(make_client_app(config), 4)  # type: ignore[arg-type]
    contexts = list(grid.contexts.values())
    for context, node in zip(contexts, node_ids, strict=True):
        context.node_id = node
    grid.contexts = {c.node_id: c for c in contexts}
    return grid


def _sampled(grid: LocalGrid) -> dict[int, list[int]]:
    """Round -> the partitions asked to train."""
    rounds: dict[int, list[int]] = {}
    for msg in grid.sent:
        if msg.metadata.message_type == "train":
            partition = grid.contexts[msg.metadata.dst_node_id].node_config["partition-id"]
            rounds.setdefault(int(msg.content["config"]["server-round"]), []).append(partition)
    return {r: sorted(p) for r, p in rounds.items()}


def test_a_resumed_run_samples_the_sites_an_uninterrupted_one_does(tmp_path: Path) -> None:
    sample = ["federation.num_sites=4", "federation.fraction_train=0.5"]
    full_grid = _grid(micro_config(tmp_path, *sample), [11, 12, 13, 14])
    full = run_on(micro_config(tmp_path, *sample, "federation.num_rounds=4", name="a"), full_grid)

    random.seed(1)  # Flower's own sampling would draw other sites from here on
    first = _grid(micro_config(tmp_path, *sample), [921, 57, 300, 4])
    run_on(micro_config(tmp_path, *sample, name="b"), first)
    config, _ = open_run(None, ["federation.num_rounds=4"], resume=tmp_path / "b")
    random.seed(2)
    second = _grid(config, [7003, 7002, 7001, 7000])  # node ids in the other order
    resumed = run_on(config, second)

    expected = _sampled(full_grid)
    assert sorted(expected) == [1, 2, 3, 4]
    assert all(len(sites) == 2 for sites in expected.values())
    assert len({tuple(sites) for sites in expected.values()}) > 1  # not one fixed pair
    assert _sampled(first) | _sampled(second) == expected
    assert [r["sites_trained"] for r in resumed.records] == [0, 2, 2, 2, 2]
    a, b = from_record(full.arrays), from_record(resumed.arrays)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
