"""Fixtures of the federated tests (their shared helpers are in :mod:`tests.helpers`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _quiet_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture
def own_temp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A system temp dir of this test's own, for it and every process it starts: what a run
    leaves there is its own, never another test session's (CI runs the fault group beside
    the slow one, both starting runs whose Flower homes live in the temp dir). Short, under
    /tmp, since Ray's AF_UNIX socket paths stop at 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="fgt", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
