"""Rejection of bad adapter updates, as a mixin over any FedAvg-family strategy.

A train reply is dropped, with a one-line logged reason, when its arrays miss a key, carry an
unexpected one, have the wrong shape or dtype, or hold NaN/inf; the round goes on with the
other replies. If every reply is rejected, the strategy returns no arrays and the global
adapters stay as they were. Aggregates are cast back to the dtypes that were sent.

How kept replies are added up, so that seeded runs are reproducible whatever order the
replies arrived in: a strategy that averages the replies (``folds``: the FedAvg family,
FedAdam's and FedAvgM's server steps included) folds each one into a
:class:`~strategies.fold.MeanFold` as it is read, and the caller may let its arrays go
before reading the next (1,000 sites then cost one running sum, not 1,000 updates);
the others (median, trimmed mean, Krum) need every update at once and sort the kept
replies by the partition id the client reports under :data:`ORDER_KEY` before the base
aggregates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from logging import INFO, WARNING
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedgray.fl.common.flower_internals import validate_message_reply_consistency
from strategies.fold import MeanFold, arrays_in

ORDER_KEY = "site"


@dataclass(frozen=True)
class Rejection:
    """One dropped train reply."""

    round: int
    node_id: int
    reason: str


class UpdateScreen:
    """Mixin placed before a FedAvg-family strategy in the MRO (see :func:`screened`)."""

    arrayrecord_key: str
    weighted_by_key: str
    folds = False  # set by screened(): the base's aggregate is the weighted mean of the replies

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
        records = arrays_in(msg.content)
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
        """Drop unusable replies (logged), then aggregate the rest as the base does (see the
        module docstring for the order they are added up in)."""
        if self.folds:
            return self._aggregate_folded(server_round, replies)
        kept = [msg for msg in replies if self._usable(server_round, msg)]
        kept.sort(key=_reply_order)
        for msg in kept:
            if not msg.has_error():
                next(iter(msg.content.metric_records.values())).pop(ORDER_KEY, None)
        arrays, metrics = super().aggregate_train(server_round, kept)  # type: ignore[misc]
        return self._cast(arrays), metrics

    def _aggregate_folded(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Fold each usable reply's arrays into a running mean as it is read, then let the
        base aggregate that mean as one reply carrying every example (a weighted mean of
        one is itself; FedAdam's and FedAvgM's server steps then apply to it as usual)."""
        fold, kept, errors = MeanFold(), [], []
        for msg in replies:
            if msg.has_error():
                errors.append(msg)
            elif self._usable(server_round, msg):
                reported = next(iter(msg.content.metric_records.values()))
                own = MetricRecord({k: v for k, v in reported.items() if k != ORDER_KEY})
                weight = float(cast(float, own[self.weighted_by_key]))
                fold.add(arrays_in(msg.content)[self.arrayrecord_key], weight)
                kept.append((_reply_order(msg), RecordDict({"metrics": own})))
        if not kept:
            return super().aggregate_train(server_round, errors)  # type: ignore[misc]
        contents = [content for _, content in sorted(kept, key=lambda pair: pair[0])]
        validate_message_reply_consistency(contents, self.weighted_by_key, check_arrayrecord=False)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)  # type: ignore[attr-defined]
        mean = fold.mean({key: dtype for key, (_, dtype) in self._expected.items()})
        total = MetricRecord({self.weighted_by_key: fold.total})
        whole = Message(RecordDict({self.arrayrecord_key: mean, "metrics": total}), 0, "train")
        log(INFO, "aggregate_train: %d update(s) folded into one mean as they arrived", len(kept))
        arrays, _ = super().aggregate_train(server_round, [whole, *errors])  # type: ignore[misc]
        return self._cast(arrays), metrics

    def _usable(self, server_round: int, msg: Message) -> bool:
        """True for an error reply (the base logs it) or a usable update; a rejection is
        recorded and logged."""
        reason = None if msg.has_error() else self.reject_reason(msg)
        if reason is None:
            return True
        self.rejections.append(Rejection(server_round, msg.metadata.src_node_id, reason))
        log(
            WARNING,
            "round %d: rejected update from node %d: %s",
            server_round,
            msg.metadata.src_node_id,
            reason,
        )
        return False

    def _cast(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """Keep the adapters' dtypes: FedAdam's float64 arithmetic would turn float32 adapters
        into float64 ones, and the next round's (float32) updates would not match them.
        (Not ``np.ascontiguousarray``: it turns a 0-d array, such as CLIP's logit scale under
        full fine-tuning, into shape (1,), and every later update was then rejected.)"""
        if arrays is None:
            return None
        return ArrayRecord(
            {k: Array(a.numpy().astype(self._expected[k][1], order="C")) for k, a in arrays.items()}
        )


def _reply_order(msg: Message) -> tuple[int, int]:
    if msg.has_error():
        return (1, msg.metadata.src_node_id)
    metrics = next(iter(msg.content.metric_records.values()))
    return (0, int(cast(int, metrics.get(ORDER_KEY, msg.metadata.src_node_id))))  # a partition id


@cache
def screened(base: type[FedAvg], *, folds: bool = False) -> type[FedAvg]:
    """``base`` with :class:`UpdateScreen` in front: ``screened(FedAdam, folds=True)(eta=0.01)``.

    ``folds``: ``base`` aggregates arrays as the weighted mean of the replies (before any
    server step of its own), so replies can be folded in as they arrive."""
    namespace = {"__module__": __name__, "folds": folds}
    return type(f"Screened{base.__name__}", (UpdateScreen, base), namespace)
