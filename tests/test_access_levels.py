"""The access-level table's federated rows: traffic per round next to the central columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fedgray.fl.common.records import record_bytes
from fedgray.fl.serverapp.server import initial_adapters
from fedgray.resolver import load_config
from simulations.access_levels import COLUMNS, run_one
from simulations.compare_methods import write_tables

MICRO = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "train.batch_size=8",
]


def test_federated_rows_carry_bytes_per_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    options = {
        "steps": 8,
        "queries": 40,
        "train_size": 60,
        "test_size": 30,
        "threads": 1,
        "overrides": MICRO,
        "output": tmp_path,
    }
    rows = [
        run_one("digits", method, setting="federated", sites=2, rounds=2, **options)
        for method in ("zero-shot", "dga")
    ]
    rows.append(run_one("digits", "dga", setting="central", **options))
    write_tables(rows, tmp_path, columns=COLUMNS)
    with (tmp_path / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [(r["setting"], r["method"]) for r in table] == [
        ("federated", "zero-shot"),
        ("federated", "dga"),
        ("central", "dga"),
    ]
    assert all(set(r) == set(COLUMNS) and all(r.values()) for r in table)
    zero_shot, federated, central = rows
    assert zero_shot["trainable"] == zero_shot["bytes_per_round"] == 0
    config = load_config(tmp_path / "federated-digits-dga" / "config.yaml")
    adapter_bytes = record_bytes(initial_adapters(config))
    assert federated["bytes_per_round"] == 2 * adapter_bytes > 0
    assert federated["trainable"] == central["trainable"] > 0
    assert central["bytes_per_round"] == 0
    for row in rows:
        assert row["queries"] > 0 and row["peak_mb"] > 0 and 0 <= row["accuracy"] <= 100
    # 2 sites x 2 rounds x 2 local steps: the central run's 8 steps in all.
    assert config.federation.local_steps == 2
    assert (tmp_path / "results.md").read_text().startswith("| " + " | ".join(COLUMNS))
