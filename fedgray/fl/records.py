"""Adapter tensors <-> Flower ArrayRecords, and what they weigh on the wire."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord


def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord of (detached, CPU) adapter tensors."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of an ArrayRecord, by key."""
    return dict(record.to_torch_state_dict())


def record_bytes(record: ArrayRecord) -> int:
    """Serialised size of the arrays (their payload bytes)."""
    return sum(len(array.data) for array in record.values())
