"""Checkpoint and resume: 2 rounds + 1 resumed round == 3 rounds, strategy state included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.checkpoint import Checkpoint, load_checkpoint
from fedgray.fl.simulation.engine import open_run
from tests.helpers import micro_config, run_local

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
