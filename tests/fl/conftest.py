"""Helpers for the federated tests: a micro config and an in-process (Ray-free) run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgray.config import Config, load_config
from fedgray.fl.local_grid import run_local

__all__ = ["MICRO", "micro_config", "run_local"]

MICRO = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "data.train_size=90",
    "data.test_size=40",
    "train.batch_size=8",
    "train.threads=1",
    "federation.num_sites=3",
    "federation.num_rounds=2",
    "federation.local_steps=2",
]


def micro_config(tmp_path: Path, *overrides: str, name: str = "run") -> Config:
    """A 3-site, 2-round federation of the random micro CLIP writing to ``tmp_path/name``."""
    return load_config(None, [*MICRO, f"output.root={tmp_path}", f"output.name={name}", *overrides])


@pytest.fixture(autouse=True)
def _quiet_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
