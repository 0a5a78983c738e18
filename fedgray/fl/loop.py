"""One federated round driven through a Flower strategy's configure/aggregate methods.

``Strategy.start`` always counts rounds from 1; driving the same four methods round by round
lets a resumed run continue at round ``k + 1`` with the true round number (FedAdam's bias
correction uses it) and lets the server checkpoint and report after every round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedgray.fl.records import record_bytes


@dataclass
class RoundOutcome:
    """What one round produced (round 0: evaluation of the initial adapters only)."""

    arrays: ArrayRecord
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    trained: int = 0
    rejected: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    train_replies: list[Message] = field(default_factory=list)


def _ok(replies: list[Message]) -> list[Message]:
    return [m for m in replies if not m.has_error()]


def run_round(
    strategy: FedAvg,
    grid: Grid,
    arrays: ArrayRecord,
    server_round: int,
    *,
    timeout: float,
    train: bool = True,
    settings: ConfigRecord | None = None,
) -> RoundOutcome:
    """Train (unless ``train`` is False), aggregate, then evaluate on the sites' held-out data.

    ``settings`` go to the sites with every train message (next to the strategy's own).
    """
    outcome = RoundOutcome(arrays)
    if train:
        config = ConfigRecord(dict(settings or {}))
        messages = list(strategy.configure_train(server_round, arrays, config, grid))
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        outcome.train_replies = replies
        uploads = [record_bytes(r) for m in _ok(replies) for r in m.content.array_records.values()]
        outcome.bytes_down = record_bytes(arrays)
        outcome.bytes_up = max(uploads, default=0)
        before = len(getattr(strategy, "rejections", ()))
        new_arrays, metrics = strategy.aggregate_train(server_round, replies)
        outcome.rejected = len(getattr(strategy, "rejections", ())) - before
        outcome.trained = len(_ok(replies)) - outcome.rejected
        if new_arrays is not None:
            outcome.arrays = new_arrays
        outcome.train_metrics = dict(metrics or {})
    messages = list(strategy.configure_evaluate(server_round, outcome.arrays, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    outcome.eval_metrics = dict(strategy.aggregate_evaluate(server_round, replies) or {})
    return outcome
