"""A run's folder: resolved config, metrics as JSON lines, trained adapters, plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from fedgray.config import Config, save_config

ADAPTERS_FORMAT = "fedgray-adapters/1"


def check_writable(folder: Path) -> None:
    """Refuse, before anything is written, a run folder this process could not fill: the
    folder and everything in it (a resumed run rewrites and appends to its files), or,
    where it does not exist yet, the nearest folder above it, where it will be made."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{folder}: {existing} is not a folder")
    inside = sorted(existing.rglob("*")) if existing == folder else []
    for path in (existing, *inside):
        mode = os.W_OK | (os.X_OK if path.is_dir() else 0)
        if not os.access(path, mode):
            raise ValueError(f"{folder}: {path} is not writable; nothing was written")


class RunFolder:
    """Files of one run under ``root/name`` (a fresh, timestamped name by default)."""

    def __init__(self, root: str | Path, name: str | None = None, *, prefix: str = "run") -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = Path(root) / (name or f"{prefix}-{stamp}")
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def metrics_file(self) -> Path:
        """Where :meth:`log` appends."""
        return self.path / "metrics.jsonl"

    def save_config(self, config: Config) -> None:
        """Write the resolved config as ``config.yaml``."""
        save_config(config, self.path / "config.yaml")

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with self.metrics_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """Every record logged so far."""
        if not self.metrics_file.is_file():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` as ``name`` (pretty JSON) and return its path."""
        path = self.path / name
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def save_adapters(path: str | Path, state: dict[str, torch.Tensor], **meta: Any) -> Path:
    """Save trained module tensors (on the CPU, whatever device trained them) with what they
    belong to (backbone name, method)."""
    path = Path(path)
    cpu = {k: v.detach().cpu() for k, v in state.items()}
    torch.save({"format": ADAPTERS_FORMAT, "meta": meta, "state": cpu}, path)
    return path


def load_adapters(path: str | Path, *, backbone: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load an adapters file, checking it was trained for ``backbone``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapters file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - reported as one line
        raise ValueError(f"{path}: not a fedgray adapters file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != ADAPTERS_FORMAT:
        raise ValueError(f"{path}: not a fedgray adapters file (format {ADAPTERS_FORMAT})")
    trained_for = payload["meta"].get("backbone")
    if trained_for != backbone:
        raise ValueError(f"{path}: adapters were trained for '{trained_for}', not '{backbone}'")
    return payload["state"], payload["meta"]
