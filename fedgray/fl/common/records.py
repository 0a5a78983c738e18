"""Adapter tensors <-> Flower ArrayRecords, and what they weigh on the wire."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from flwr.app import ArrayRecord, MetricRecord


def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ArrayRecord of (detached, CPU) adapter tensors."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of an ArrayRecord, by key."""
    return dict(record.to_torch_state_dict())


def record_bytes(record: ArrayRecord) -> int:
    """Serialised size of the arrays (their payload bytes)."""
    return sum(len(array.data) for array in record.values())


def scalar_metrics(record: MetricRecord | None) -> dict[str, float]:
    """An aggregated MetricRecord as a plain dict (empty for None): fedgray's sites report
    scalar metrics only, so the aggregates are scalars too."""
    return dict(cast(Mapping[str, float], record or {}))
