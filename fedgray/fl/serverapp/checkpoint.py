"""The server's per-round checkpoint: global adapters, strategy state and round number,
and with ``federation.select: best`` the chosen round's adapters beside the last ones.

One file, ``checkpoint.pt`` in the run folder, replaced atomically after every round, so a
crash leaves the previous round's checkpoint intact. It loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedgray.fl.common.records import from_record, to_record
from strategies import restore_strategy_state, strategy_state

CHECKPOINT = "checkpoint.pt"
FORMAT = "fedgray-fl-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """The state a resumed run starts from."""

    round: int
    strategy: str
    arrays: ArrayRecord
    strategy_state: dict[str, tuple[str, dict[str, np.ndarray]]]
    privacy: dict[str, Any] = field(default_factory=dict)
    central: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)

    def restore(self, strategy: object) -> None:
        """Put the saved strategy state back on a freshly built ``strategy``."""
        restore_strategy_state(strategy, self.strategy_state)


def save_checkpoint(
    run_dir: Path,
    *,
    server_round: int,
    name: str,
    arrays: ArrayRecord,
    strategy: object,
    privacy: dict[str, Any] | None = None,
    central: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Write (atomically) the checkpoint after ``server_round``; ``privacy``: the sites'
    ledgers, ``central``: the central-DP ledger, ``selection``: the round chosen so far
    (:meth:`fedgray.fl.serverapp.selection.Selection.state`)."""
    state = {
        attr: {"kind": kind, "arrays": {k: torch.from_numpy(np.array(v)) for k, v in d.items()}}
        for attr, (kind, d) in strategy_state(strategy).items()
    }
    payload = {
        "format": FORMAT,
        "round": server_round,
        "strategy": name,
        "arrays": from_record(arrays),
        "strategy_state": state,
        "privacy": privacy or {},
        "central": central or {},
        "selection": selection or {},
    }
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before it replaces the previous checkpoint
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill leaves the previous one in place
        raise
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read the checkpoint of a run folder."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported in one line
        raise ValueError(
            f"{path}: unreadable, truncated or corrupt ({type(error).__name__}); "
            "the run cannot be resumed from it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fedgray federated checkpoint ({FORMAT})")
    state = {
        attr: (entry["kind"], {k: v.numpy() for k, v in entry["arrays"].items()})
        for attr, entry in payload["strategy_state"].items()
    }
    return Checkpoint(
        payload["round"],
        payload["strategy"],
        to_record(payload["arrays"]),
        state,
        payload.get("privacy", {}),
        payload.get("central", {}),
        payload.get("selection", {}),
    )
