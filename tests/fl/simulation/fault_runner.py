"""Run the micro federation and SIGKILL this process in a chosen phase of round 2.

Used by ``test_faults.py`` as ``python -m tests.fl.simulation.fault_runner PHASE ROOT``; a helper,
not a test module. Phases: ``train`` (a site mid-round), ``aggregate`` (the strategy
aggregating), ``checkpoint`` (half of the new checkpoint written).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from flwr.serverapp.strategy import FedAvg

from fedgray.fl.clientapp.client import Client
from fedgray.fl.serverapp import checkpoint as checkpoint_module
from fedgray.fl.simulation.local_grid import run_local
from tests.helpers import micro_config

KILL_ROUND = 2


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(phase: str) -> None:
    if phase == "train":
        real_train = Client.train

        def train(self: Client, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("server_round") == KILL_ROUND and self.partition_id == 1:
                _die()
            return real_train(self, *args, **kwargs)

        Client.train = train  # type: ignore[method-assign]
    elif phase == "aggregate":
        real_aggregate = FedAvg.aggregate_train

        def aggregate(self: FedAvg, server_round: int, replies: Any) -> Any:
            if server_round == KILL_ROUND:
                _die()
            return real_aggregate(self, server_round, replies)

        FedAvg.aggregate_train = aggregate  # type: ignore[method-assign]
    elif phase == "checkpoint":
        real_save = torch.save

        def save(payload: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(payload, dict) and payload.get("round") == KILL_ROUND:
                data = __import__("io").BytesIO()
                real_save(payload, data)
                handle.write(data.getvalue()[: len(data.getvalue()) // 2])
                handle.flush()
                _die()
            real_save(payload, handle, *args, **kwargs)

        checkpoint_module.torch.save = save  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    phase, root = sys.argv[1], Path(sys.argv[2])
    _arm(phase)
    run_local(micro_config(root, *sys.argv[3:], name=phase))
    raise SystemExit("the run ended without being killed")
