"""The train phase through SecAgg+: the server learns only the (weighted) sum of the updates.

Flower 1.42 runs SecAgg+ only on its legacy API: ``SecAggPlusWorkflow`` drives a legacy
``FedAvg`` inside a ``LegacyContext``. :class:`SecureTraining` builds those once and runs
the workflow for one round at a time, from fedgray's own round loop, so a secure run has
the same round numbering, evaluation, records, checkpoints and resume as a run in the
clear (:func:`fedgray.fl.serverapp.loop.run_round`). Sites send ``new - global`` adapters (see
:mod:`fedgray.fl.clientapp.secagg`); the server adds the unmasked mean back onto the global
adapters, in their dtype. Under central DP, Flower's legacy client-side fixed-clipping
wrapper adds its noise to that mean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common import FitRes
from flwr.server import LegacyContext
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedgray.config import Config
from fedgray.fl.common.central import with_legacy_central_dp
from fedgray.fl.common.fit_messages import fit_config, ledger_from_metrics
from fedgray.fl.common.flower_internals import (
    MAIN_CONFIGS_RECORD,
    MAIN_PARAMS_RECORD,
    GridClientProxy,
    WorkflowKey,
    WorkflowState,
    aggregate_metricrecords,
)
from fedgray.fl.common.private import BUDGET_EXHAUSTED
from fedgray.fl.common.records import scalar_metrics
from fedgray.fl.common.site_names import FIT_NAME
from fedgray.fl.serverapp.exchange import arriving
from fedgray.fl.serverapp.failures import NO_REPLY, Failure, short_reason
from fedgray.fl.serverapp.loop import TrainOutcome

WEIGHT = "num-examples"


class _Workflow(SecAggPlusWorkflow):
    """SecAgg+ that keeps its last protocol state (the sites' Fit metrics and failures)."""

    last: WorkflowState | None = None

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's setup stage, remembering ``state`` for after the round."""
        self.last = state
        return super().setup_stage(grid, context, state)


def payload_bytes(content: RecordDict) -> int:
    """Bytes of arrays and of byte strings (keys, shares, masked vectors) in a message."""
    total = sum(len(a.data) for r in content.array_records.values() for a in r.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


class _MeteredGrid:
    """``send_and_receive`` on a Grid, adding up each node's traffic and keeping each
    node's last error (budget refusals apart). Replies are pulled as
    :func:`~fedgray.fl.serverapp.exchange.arriving` pulls them: Flower's HTTP grid would
    wait 3 s between pulls, at each of SecAgg+'s four stages."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.down: Counter[int] = Counter()
        self.up: Counter[int] = Counter()
        self.errors: dict[int, str] = {}
        self.refused: set[int] = set()

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send, receive and count."""
        messages = list(messages)
        for msg in messages:
            self.down[msg.metadata.dst_node_id] += payload_bytes(msg.content)
        replies = list(arriving(self.grid, messages, timeout=timeout))
        nodes = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        for reply in replies:
            if not reply.has_error():
                self.up[reply.metadata.src_node_id] += payload_bytes(reply.content)
                continue
            node = nodes.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.error.code == BUDGET_EXHAUSTED:
                self.refused.add(node)
            else:  # an unavailable node's error comes from the SuperLink, not from the node
                self.errors[node] = short_reason(reply.error.reason)
        return replies


def _refusals(failures: list[Any]) -> list[str]:
    """Budget refusals among the protocol's failures (Flower lists some failures twice)."""
    errors = [f.args[0] for f in failures if f.args and isinstance(f.args[0], Error)]
    # refusal_mod always gives a reason
    return list(dict.fromkeys(cast(str, e.reason) for e in errors if e.code == BUDGET_EXHAUSTED))


def _failed(protocol: WorkflowState | None, grid: _MeteredGrid) -> list[Failure]:
    """The sampled sites that sent no usable masked update (budget refusals apart), each
    with its own error, else the protocol's, else no reply."""
    if protocol is None:
        return []
    others = [
        short_reason(f"{type(f).__name__}: {f}")
        for f in protocol.failures
        if not (f.args and isinstance(f.args[0], Error))
    ]
    done = {proxy.node_id for proxy, _ in protocol.legacy_results} | grid.refused
    return [
        Failure(node, grid.errors.get(node) or (others[0] if others else NO_REPLY))
        for node in protocol.nid_to_proxies
        if node not in done
    ]


def _train_metrics(results: list[FitRes]) -> dict[str, float]:
    numeric = [
        {k: v for k, v in r.metrics.items() if isinstance(v, int | float) and k != WEIGHT}
        for r in results
    ]
    records = [
        RecordDict({"m": MetricRecord({**m, WEIGHT: r.num_examples})})
        for m, r in zip(numeric, results, strict=True)
    ]
    return scalar_metrics(aggregate_metricrecords(records, WEIGHT)) if records else {}


class SecureTraining:
    """The train phase of ``config`` through SecAgg+ on ``grid`` (see the module docstring)."""

    def __init__(self, config: Config, grid: Grid) -> None:
        fed, secure = config.federation, config.federation.secure_aggregation
        self.grid = grid
        self.fit_config: dict[str, Any] = {}
        strategy: LegacyStrategy = LegacyFedAvg(
            fraction_fit=1.0,  # the round loop samples; the client manager holds only those
            fraction_evaluate=0.0,
            min_fit_clients=1,
            min_evaluate_clients=0,
            min_available_clients=1,
            on_fit_config_fn=lambda _: dict(self.fit_config),
            fit_metrics_aggregation_fn=lambda _: {},  # averaged from the protocol state instead
        )
        if config.privacy.central.enabled:
            strategy = with_legacy_central_dp(strategy, config)
        self.proxies: dict[int, GridClientProxy] = {}
        server = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
        manager = SimpleClientManager()
        self.context = LegacyContext(server, strategy=strategy, client_manager=manager)
        self.workflow = _Workflow(
            secure.num_shares,
            secure.reconstruction_threshold,
            max_weight=1.0 if config.privacy.central.enabled else secure.max_weight,
            clipping_range=secure.clipping_range,
            quantization_range=secure.quantization_range,
            timeout=fed.round_timeout,
        )

    def _sync_nodes(self, nodes: list[int]) -> None:
        """Register the round's sampled ``nodes`` (and only those) with the legacy client
        manager (what Flower's ``DefaultWorkflow`` does for all nodes from a thread)."""
        live, manager = set(nodes), self.context.client_manager
        for node in live - set(self.proxies):
            self.proxies[node] = GridClientProxy(node_id=node, grid=self.grid, run_id=0)
            manager.register(self.proxies[node])
        for node in set(self.proxies) - live:
            manager.unregister(self.proxies.pop(node))

    def __call__(
        self, server_round: int, arrays: ArrayRecord, settings: ConfigRecord, nodes: list[int]
    ) -> TrainOutcome:
        """One SecAgg+ round of the sampled ``nodes`` from the global ``arrays``."""
        self._sync_nodes(nodes)
        keys = list(arrays.keys())
        self.fit_config = fit_config(server_round, keys, settings)
        state = self.context.state
        state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: server_round}
        )
        sent = ArrayRecord({k: Array(a.numpy()) for k, a in arrays.items()})
        state.array_records[MAIN_PARAMS_RECORD] = sent
        grid = _MeteredGrid(self.grid)
        self.workflow.last = None
        self.workflow(grid, self.context)  # type: ignore[arg-type]  # a Grid in all it uses
        protocol = self.workflow.last
        pairs: list[tuple[ClientProxy, FitRes]] = protocol.legacy_results if protocol else []
        results: list[FitRes] = [fitres for _, fitres in pairs]
        failures: list[Exception] = protocol.failures if protocol else []
        updated = state.array_records[MAIN_PARAMS_RECORD]
        new = None
        if updated is not sent:
            mean = updated.to_numpy_ndarrays()
            new = ArrayRecord(
                {
                    k: Array((arrays[k].numpy() + d).astype(arrays[k].numpy().dtype))
                    for k, d in zip(keys, mean, strict=True)
                }
            )
        ledgers = [ledger_from_metrics(r.metrics) for r in results]
        return TrainOutcome(
            new,
            _train_metrics(results),
            sampled=len(protocol.nid_to_proxies) if protocol else 0,
            trained=len(results) if new is not None else 0,
            bytes_down=max(grid.down.values(), default=0),
            bytes_up=max(grid.up.values(), default=0),
            ledgers=[ledger for ledger in ledgers if ledger is not None],
            refusals=_refusals(failures),
            failed=_failed(protocol, grid),
            replied=len(results),
            names={p.node_id: str(r.metrics[FIT_NAME]) for p, r in pairs if FIT_NAME in r.metrics},
        )
