"""One federated round driven through a Flower strategy's configure/aggregate methods.

``Strategy.start`` always counts rounds from 1; driving the same four methods round by round
lets a resumed run continue at round ``k + 1`` with the true round number (FedAdam's bias
correction uses it) and lets the server checkpoint and report after every round.

The train phase is pluggable: :func:`plain_training` sends the adapters to the sampled sites
and aggregates their replies with the strategy; :class:`fedgray.fl.serverapp.secagg.SecureTraining`
runs the same phase through SecAgg+. Evaluation is the same for both. Which sites each phase
asks is the :class:`~fedgray.fl.serverapp.roster.Roster`'s seeded choice, so a resumed run
asks the same sites as an uninterrupted one; it also names the sites a warning leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedgray.backbone.budget import SPEND_KEYS
from fedgray.fl.common.compression import decode_up, encode_down, snap
from fedgray.fl.common.private import site_reports
from fedgray.fl.common.records import from_record, record_bytes, scalar_metrics, to_record
from fedgray.fl.serverapp.exchange import arriving
from fedgray.fl.serverapp.failures import Failure, check_phase, failures
from fedgray.fl.serverapp.roster import Roster, names_in, sampled
from strategies.fold import arrays_in


@dataclass
class TrainOutcome:
    """What a train phase produced. ``arrays`` is None when nothing was aggregated;
    ``spend``: what the sites report having spent of their backbone budgets (calls,
    samples forwarded, input gradients; see :mod:`fedgray.backbone.budget`);
    ``replied``: sites whose reply came back without error; ``failed``: the others (budget
    refusals apart); ``names``: node id -> site name, as the replies gave them."""

    arrays: ArrayRecord | None
    train_metrics: dict[str, float] = field(default_factory=dict)
    sampled: int = 0
    trained: int = 0
    rejected: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    ledgers: list[ConfigRecord] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    spend: dict[str, int] = field(default_factory=dict)
    failed: list[Failure] = field(default_factory=list)
    replied: int = 0
    names: dict[int, str] = field(default_factory=dict)


class TrainPhase(Protocol):
    """Train ``nodes`` (the sampled sites) from ``arrays`` and aggregate (``settings`` go to
    every site)."""

    def __call__(
        self, server_round: int, arrays: ArrayRecord, settings: ConfigRecord, nodes: list[int]
    ) -> TrainOutcome: ...


@dataclass
class RoundOutcome(TrainOutcome):
    """What one round produced (round 0: evaluation of the initial adapters only).

    ``arrays`` are the global adapters after the round; ``trained`` counts the site updates
    inside them (0 when the round kept the old ones), ``sampled`` the sites asked to train.
    ``warnings``: one line per phase in which some sites failed (see
    :mod:`fedgray.fl.serverapp.failures`); ``failed_sites``: the names of the sites that
    failed to train.
    """

    arrays: ArrayRecord  # never None: the old adapters when the round aggregated nothing
    eval_metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failed_sites: list[str] = field(default_factory=list)


def _ok(replies: list[Message]) -> list[Message]:
    return [m for m in replies if not m.has_error()]


def _spend(replies: list[Message]) -> dict[str, int]:
    """What the sites' train replies report having spent of their budgets, summed (the
    counts no reply reports left out)."""
    total: dict[str, int] = {}
    for reply in replies:
        metrics = cast(MetricRecord, reply.content["metrics"])  # as the ClientApp replies
        for key in SPEND_KEYS:
            if key in metrics:
                total[key] = total.get(key, 0) + int(cast(int, metrics[key]))
    return total


def _rejections(strategy: Strategy) -> int:
    """Updates the screen has rejected so far (the screen may sit inside a DP wrapper)."""
    return len(getattr(getattr(strategy, "strategy", strategy), "rejections", ()))


def _with_arrays(message: Message, arrays: ArrayRecord) -> Message:
    """``message`` with its one ArrayRecord replaced by ``arrays`` (errors left as they are)."""
    if not message.has_error():
        for key in arrays_in(message.content):
            message.content[key] = arrays
    return message


def plain_training(
    strategy: Strategy, grid: Grid, *, timeout: float, compression: str = "none"
) -> TrainPhase:
    """The train phase in the clear: ``strategy`` configures, the sites reply, it aggregates.

    With ``compression: int8`` the global adapters live on the float16 grid and travel as
    float16; each site's int8 update is decoded before the strategy sees it (the strategy,
    its update checks and its state work on float32 adapters as without compression).
    """

    def train(
        server_round: int, arrays: ArrayRecord, settings: ConfigRecord, nodes: list[int]
    ) -> TrainOutcome:
        config = ConfigRecord(dict(settings))
        sent, reference = arrays, {}
        if compression == "int8":
            reference = snap(from_record(arrays))
            arrays, sent = to_record(reference), encode_down(reference)
        view = sampled(grid, nodes)  # the strategy configures exactly the sampled nodes
        messages = list(strategy.configure_train(server_round, arrays, config, view))
        if compression == "int8":
            messages = [_with_arrays(m, sent) for m in messages]
        replies: list[Message] = []
        uploads: list[int] = []
        folds = getattr(strategy, "folds", False)  # False for a central-DP wrapper

        def read() -> Iterator[Message]:
            for reply in arriving(grid, messages, timeout=timeout):
                if not reply.has_error():
                    uploads.extend(map(record_bytes, arrays_in(reply.content).values()))
                replies.append(_decoded(reply, reference) if compression == "int8" else reply)
                yield replies[-1]
                if folds:  # folded into the strategy's running mean: let the update go
                    _drop_arrays(replies[-1])

        before = _rejections(strategy)
        # a folding strategy reads each reply once, as it arrives; the others get the list
        new_arrays, metrics = strategy.aggregate_train(
            server_round, read() if folds else list(read())
        )
        rejected = _rejections(strategy) - before
        ledgers, refusals = site_reports(replies)
        return TrainOutcome(
            new_arrays,
            scalar_metrics(metrics),
            sampled=len(messages),
            trained=len(_ok(replies)) - rejected if new_arrays is not None else 0,
            rejected=rejected,
            bytes_down=record_bytes(sent),
            bytes_up=max(uploads, default=0),
            ledgers=ledgers,
            refusals=refusals,
            spend=_spend(_ok(replies)),
            failed=failures(messages, replies),
            replied=len(_ok(replies)),
            names=names_in(replies),
        )

    return train


def _decoded(reply: Message, reference: dict[str, torch.Tensor]) -> Message:
    """A site's int8 reply as the float32 adapters it stands for."""
    if reply.has_error():
        return reply
    (record,) = arrays_in(reply.content).values()
    return _with_arrays(reply, decode_up(record, reference))


def _drop_arrays(reply: Message) -> None:
    """Let a reply's arrays go (its metrics and records stay for the round's report)."""
    if not reply.has_error():
        for key in arrays_in(reply.content):
            del reply.content[key]


def run_round(
    strategy: FedAvg,
    grid: Grid,
    arrays: ArrayRecord,
    server_round: int,
    *,
    timeout: float,
    train: bool = True,
    settings: ConfigRecord | None = None,
    trainer: TrainPhase | None = None,
    roster: Roster | None = None,
) -> RoundOutcome:
    """Train (unless ``train`` is False), aggregate, then evaluate on the sites' held-out data.

    ``roster`` picks the sites of each phase and names them (default: every connected
    site); ``trainer`` runs the train phase (default: :func:`plain_training` with
    ``strategy``); ``strategy`` configures and aggregates the evaluation. ``settings`` go to
    the sites with every train message (next to the strategy's own). Raises
    :class:`~fedgray.fl.serverapp.failures.FederationError` when no site could train or evaluate.
    """
    roster = roster or Roster(timeout=timeout)
    outcome = RoundOutcome(arrays)
    if train:
        nodes = roster.sample(grid, server_round, "train")
        phase = trainer or plain_training(strategy, grid, timeout=timeout)
        result = phase(server_round, arrays, ConfigRecord(dict(settings or {})), nodes)
        roster.names.update(result.names)
        outcome = RoundOutcome(**vars(result))
        if result.arrays is None:
            outcome.arrays = arrays
        outcome.failed_sites = [roster.name(f.node_id) for f in result.failed]
        warning = check_phase(
            "train",
            server_round,
            failed=result.failed,
            usable=result.replied,
            asked=result.sampled,
            label=roster.label,
        )
        outcome.warnings += [warning] if warning else []
    view = sampled(grid, roster.sample(grid, server_round, "evaluate"))
    messages = list(strategy.configure_evaluate(server_round, outcome.arrays, ConfigRecord(), view))
    replies = list(arriving(grid, messages, timeout=timeout))
    roster.learn(replies)
    warning = check_phase(
        "evaluate",
        server_round,
        failed=failures(messages, replies),
        usable=len(_ok(replies)),
        asked=len(messages),
        label=roster.label,
    )
    outcome.warnings += [warning] if warning else []
    outcome.eval_metrics = scalar_metrics(strategy.aggregate_evaluate(server_round, replies))
    return outcome
