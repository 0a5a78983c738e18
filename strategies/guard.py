"""Rejection of bad adapter updates, as a mixin over any FedAvg-family strategy.

A train reply is dropped, with a one-line logged reason, when its arrays miss a key, carry an
unexpected one, have the wrong shape or dtype, or hold NaN/inf; the round goes on with the
other replies. If every reply is rejected, the strategy returns no arrays and the global
adapters stay as they were. Aggregates are cast back to the dtypes that were sent. Kept
replies are put in a fixed order (by the site number the client reports under
:data:`ORDER_KEY`), so aggregation sums in the same order every run and seeded runs are
bit-for-bit reproducible whatever order the replies arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from logging import WARNING
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

ORDER_KEY = "site"


@dataclass(frozen=True)
class Rejection:
    """One dropped train reply."""

    round: int
    node_id: int
    reason: str


class UpdateGuard:
    """Mixin placed before a FedAvg-family strategy in the MRO (see :func:`guarded`)."""

    arrayrecord_key: str
    weighted_by_key: str

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.rejections: list[Rejection] = []
        self._expected: dict[str, tuple[tuple[int, ...], str]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the keys, shapes and dtypes sent out, then configure as usual."""
        self._expected = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def reject_reason(self, msg: Message) -> str | None:
        """Why a (non-error) train reply is unusable, or None when it is fine."""
        records = msg.content.array_records
        if list(records) != [self.arrayrecord_key]:
            return f"expected one ArrayRecord '{self.arrayrecord_key}', got {list(records)}"
        arrays = records[self.arrayrecord_key]
        if missing := sorted(set(self._expected) - set(arrays)):
            return f"missing keys {missing}"
        if extra := sorted(set(arrays) - set(self._expected)):
            return f"unexpected keys {extra}"
        for key, array in arrays.items():
            shape, dtype = self._expected[key]
            if (tuple(array.shape), array.dtype) != (shape, dtype):
                return f"{key}: shape {tuple(array.shape)} {array.dtype}, expected {shape} {dtype}"
            if not np.isfinite(array.numpy()).all():
                return f"{key}: non-finite values"
        metrics = list(msg.content.metric_records.values())
        if len(metrics) != 1 or self.weighted_by_key not in metrics[0]:
            return f"expected one MetricRecord with '{self.weighted_by_key}'"
        return None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop unusable replies (logged), order the rest, aggregate them as the base does."""
        kept: list[Message] = []
        for msg in replies:
            reason = None if msg.has_error() else self.reject_reason(msg)
            if reason is None:
                kept.append(msg)
                continue
            self.rejections.append(Rejection(server_round, msg.metadata.src_node_id, reason))
            log(
                WARNING,
                "round %d: rejected update from node %d: %s",
                server_round,
                msg.metadata.src_node_id,
                reason,
            )
        kept.sort(key=_site_of)
        for msg in kept:
            if not msg.has_error():
                next(iter(msg.content.metric_records.values())).pop(ORDER_KEY, None)
        arrays, metrics = super().aggregate_train(server_round, kept)  # type: ignore[misc]
        if arrays is None:
            return None, metrics
        return ArrayRecord({k: Array(self._cast(k, a.numpy())) for k, a in arrays.items()}), metrics

    def _cast(self, key: str, value: np.ndarray) -> np.ndarray:
        """Keep the adapters' dtype: FedAdam's float64 arithmetic would turn float32 adapters
        into float64 ones, and the next round's (float32) updates would not match them.
        (Not ``np.ascontiguousarray``: it turns a 0-d array, such as CLIP's logit scale under
        full fine-tuning, into shape (1,), and every later update was then rejected.)"""
        return value.astype(self._expected[key][1], order="C")


def _site_of(msg: Message) -> tuple[int, int]:
    if msg.has_error():
        return (1, msg.metadata.src_node_id)
    metrics = next(iter(msg.content.metric_records.values()))
    return (0, int(cast(int, metrics.get(ORDER_KEY, msg.metadata.src_node_id))))  # a site number


@cache
def guarded(base: type[FedAvg]) -> type[FedAvg]:
    """``base`` with :class:`UpdateGuard` in front: ``guarded(FedAdam)(eta=0.01)``."""
    return type(f"Guarded{base.__name__}", (UpdateGuard, base), {"__module__": __name__})
