"""Shared fixtures: an isolated cache, small backbones, a briefly pretrained tiny CLIP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# No model hub is reachable where the suite runs: fail hub look-ups at once, not after retries
# (huggingface_hub reads this when first imported, so it is set before anything imports it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fedgray.backbone import SealedBackbone, load_sealed  # noqa: E402
from tests.helpers import TEST_RECIPE  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point every cache and home-folder write of the suite at a temporary directory."""
    root = tmp_path_factory.mktemp("cache")
    saved = {k: os.environ.get(k) for k in ("FEDGRAY_CACHE", "FLWR_HOME", "RAY_TMPDIR")}
    os.environ["FEDGRAY_CACHE"] = str(root / "fedgray")
    os.environ["FLWR_HOME"] = str(root / "flwr")
    os.environ["RAY_TMPDIR"] = str(root / "ray")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def micro() -> SealedBackbone:
    """A randomly initialised micro CLIP sealed at ``gray``."""
    torch.manual_seed(0)
    return load_sealed("fedgray-micro", None, level="gray")


@pytest.fixture(scope="session")
def pretrained_tiny(isolated_cache: Path) -> Path:
    """Checkpoint of the tiny CLIP after a short pretraining on the source domain."""
    from fedgray.owner.pretrain import builtin_checkpoint

    return builtin_checkpoint("fedgray-tiny", TEST_RECIPE, progress=False)


@pytest.fixture
def small_whitening_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """``method.whiten``'s statistics from 160 public images instead of 4,000, empty cache."""
    from fedgray.adapters import whitening

    monkeypatch.setattr(whitening, "SAMPLES", 160)
    monkeypatch.setattr(whitening, "_STATISTICS", {})
