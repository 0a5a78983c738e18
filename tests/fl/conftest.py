"""Fixtures of the federated tests (their shared helpers are in :mod:`tests.helpers`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _quiet_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
