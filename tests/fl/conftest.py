"""Helpers for the federated tests: a micro config and an in-process (Ray-free) run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, RecordDict

from fedgray.config import Config, load_config
from fedgray.fl import make_client_app, make_server_app
from fedgray.fl.local_grid import LocalGrid
from fedgray.fl.server import FederationResult

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


def run_local(
    config: Config, *, run_config: dict[str, Any] | None = None
) -> tuple[FederationResult, dict[str, Any], LocalGrid]:
    """Run the ServerApp against a LocalGrid of ``federation.num_sites`` nodes."""
    out: dict[str, Any] = {}
    grid = LocalGrid(make_client_app(config), config.federation.num_sites)
    app = make_server_app(
        config, echo=lambda _: None, on_result=lambda r, s: out.update(result=r, summary=s)
    )
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config or {}
    )
    app(grid, context)
    return out["result"], out["summary"], grid


@pytest.fixture(autouse=True)
def _quiet_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
