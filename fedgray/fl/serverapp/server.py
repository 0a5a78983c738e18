"""The server's side of a federated run: rounds, centralised evaluation, reports, checkpoints.

Round 0 evaluates the initial adapters (at identity: exactly zero-shot), then every round
trains, aggregates, evaluates on the sites' held-out data and, if configured, on the server's
validation split; after each round the run folder gets a metrics line and a fresh checkpoint.
The run returns the last round's adapters, or with ``federation.select: best`` those of the
round that scored best on the sites' held-out data or the server's validation split
(:mod:`fedgray.fl.serverapp.selection`).

The server's test split is read once, after the last round: it scores the adapters the run
ends with, and the initial ones for the zero-shot figure beside them. No round, curve or
choice ever sees it, so the figure a run reports was not chosen on the data that reports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedgray.backbone import Backbone
from fedgray.config import Config, FederationConfig, PrivacyConfig, TrainConfig
from fedgray.fl.common.cache import shared_backbone, shared_data
from fedgray.fl.common.central import CentralLedger, num_sampled, with_central_dp
from fedgray.fl.common.private import PrivacyLog, audit_line
from fedgray.fl.common.records import from_record, to_record
from fedgray.fl.common.selection_rules import SELECTION_SPLITS
from fedgray.fl.serverapp.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint, save_checkpoint
from fedgray.fl.serverapp.failures import wait_for_nodes
from fedgray.fl.serverapp.loop import RoundOutcome, TrainPhase, plain_training, run_round
from fedgray.fl.serverapp.published import InterfaceOnly, WeightsNeeded, published_interface
from fedgray.fl.serverapp.roster import Roster
from fedgray.fl.serverapp.secagg import SecureTraining
from fedgray.fl.serverapp.selection import Selection, scores_validation
from fedgray.runs import RunFolder
from fedgray.tasks import TASKS, TaskData
from fedgray.train.kinds import kind_of
from strategies import Rejection, build_strategy, split_personal

Echo = Callable[[str], None]


@dataclass
class FederationResult:
    """Per-round records and the final global adapters of a federated run: those of round
    ``selected`` (the last one unless ``federation.select`` is ``best``)."""

    run_dir: Path
    records: list[dict[str, Any]]
    arrays: ArrayRecord
    backbone_bytes: int
    selected: int
    rejections: list[Rejection] = field(default_factory=list)
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    """The server's test split, read once after the last round (empty without
    ``federation.central_eval``): ``zero_shot`` (the initial adapters) and ``final``."""


def _split_data(config: Config, split: str) -> TaskData:
    """The server's ``validation`` or ``test`` split; every read of the test split goes
    through here, once per run (:func:`score_test_split`)."""
    sizes = {"validation": config.data.validation_size, "test": config.data.test_size}
    return shared_data(config, dataset=config.data.dataset, split=split, size=sizes[split])


def initial_adapters(config: Config) -> ArrayRecord:
    """The shared arrays at initialisation (adapters at identity), seeded by ``federation.seed``.

    Built from the backbone's published interface where the method's builder needs shapes
    only; the others open the backbone: initial tensors that depend on the weights
    (whitening statistics, the white baselines), CraFT (its refiner is sized by the
    server's validation split) and a served runtime (whose manifest the server cannot read).
    """
    state = _from_interface(config)
    if state is None:
        state = kind_of(config.method).start(
            config, shared_backbone(config), lambda: _split_data(config, "validation")
        )
    shared, _ = split_personal(state, config.federation.personal)
    return to_record(shared)


def _from_interface(config: Config) -> dict[str, torch.Tensor] | None:
    """The method's initial tensors built around :class:`InterfaceOnly`; None where the
    interface is unreadable or the builder asked for more than shapes."""
    interface = published_interface(config.backbone)
    if interface is None:
        return None
    try:
        backbone = cast(Backbone, InterfaceOnly(interface))  # shapes only: see published.py
        return kind_of(config.method).start(
            config, backbone, lambda: _split_data(config, "validation")
        )
    except WeightsNeeded:
        return None


def backbone_bytes(config: Config) -> int:
    """The backbone's size in float32 bytes (the traffic ratio's denominator), from its
    published interface where the server can read it."""
    interface = published_interface(config.backbone) or shared_backbone(config).interface
    return interface.parameter_count * 4


def central_evaluator(config: Config, split: str) -> Callable[[ArrayRecord], dict[str, float]]:
    """Metrics of global arrays on the server's ``split`` (personal adapters at identity)."""
    data, backbone = _split_data(config, split), shared_backbone(config)
    score = kind_of(config.method).score
    return lambda arrays: score(config, backbone, from_record(arrays), data)


def score_test_split(config: Config, arrays: dict[str, ArrayRecord]) -> dict[str, dict[str, float]]:
    """Each of ``arrays`` (by name) scored on the server's test split, read once here."""
    score = central_evaluator(config, "test")
    return {name: score(state) for name, state in arrays.items()}


def _record(config: Config, rnd: int, outcome: RoundOutcome, started: float) -> dict[str, Any]:
    record = {
        "round": rnd,
        "seconds": round(time.perf_counter() - started, 3),
        "sites_trained": outcome.trained,
        "rejected": outcome.rejected,
        "site_failures": len(outcome.failed),
        "failed_sites": outcome.failed_sites,
        "bytes_down": outcome.bytes_down,
        "bytes_up": outcome.bytes_up,
        "train_loss": outcome.train_metrics.get("train-loss"),
        "federated": dict(outcome.eval_metrics),
    } | {k: v for k, v in outcome.spend.items() if v}  # queries, samples, gradients
    if scores_validation(config.federation):
        record["validation"] = central_evaluator(config, "validation")(outcome.arrays)
    return record


def headline(train: TrainConfig, record: dict[str, Any]) -> float:
    """A round's value of the task's metric for the curve: on the server's validation split
    when it is scored, else the sites' held-out data (never the test split)."""
    metric = TASKS[train.task].metric
    return (record.get("validation") or record["federated"]).get(metric, float("nan"))


def progress_line(config: Config, record: dict[str, Any]) -> str:
    """``round 3/5  r1_mean 41.2 (validation; sites 44.0)  loss 1.873  sent 9.2+9.2 KB/site
    6.1 s``; the sites' figure only where sites evaluated (``federation.fraction_evaluate``)."""
    fed, metric = config.federation, TASKS[config.train.task].metric
    sites = record["federated"].get(metric)
    loss = record["train_loss"]
    scopes = ["validation"] if record.get("validation") else []
    scopes += [] if sites is None else [f"sites {sites:5.1f}"]
    return (
        f"round {record['round']}/{fed.num_rounds}  {metric} {headline(config.train, record):5.1f}"
        f" ({'; '.join(scopes) or 'not scored'})"
        f"  loss {'  -  ' if loss is None else f'{loss:.3f}'}"
        f"  sent {record['bytes_down'] / 1e3:.1f}+{record['bytes_up'] / 1e3:.1f} KB/site"
        f"  {record['seconds']:.1f} s"
        + (f"  queries {record['queries']:,}" if "queries" in record else "")
        + (f"  samples {record['samples']:,}" if "samples" in record else "")
        + (f"  eps max {record['privacy']['max_epsilon']:.2f}" if "privacy" in record else "")
        + (f"  eps central {record['central_dp']['epsilon']:.2f}" if "central_dp" in record else "")
    )


def _resume(run: RunFolder, fed: FederationConfig, strategy: object) -> Checkpoint:
    checkpoint = load_checkpoint(run.path)
    if checkpoint.strategy != fed.strategy:
        raise ValueError(f"checkpoint is for strategy '{checkpoint.strategy}'")
    checkpoint.restore(strategy)
    kept = [r for r in run.records() if r["round"] <= checkpoint.round]
    run.metrics_file.write_text("".join(f"{json.dumps(r)}\n" for r in kept))
    return checkpoint


def _stop_for_budget(privacy: PrivacyConfig, record: dict[str, Any], echo: Echo) -> bool:
    refusals = record.get("privacy", {}).get("budget_refusals", [])
    for reason in refusals:
        echo(reason)
    if refusals and privacy.on_budget == "stop":
        echo(f"stopping after round {record['round']}: privacy.on_budget is 'stop'")
        return True
    return False


def site_roster(fed: FederationConfig) -> Roster:
    """Who is asked each round: ``fraction_train`` of the sites as Flower's FedAvg counts
    them (:func:`num_sampled`), and ``fraction_evaluate`` of them (at least one unless 0),
    drawn with ``federation.seed`` once ``num_sites`` are connected or ``round_timeout``
    has passed (see :mod:`fedgray.fl.serverapp.roster`)."""
    evaluate = max(int(fed.num_sites * fed.fraction_evaluate), 1) if fed.fraction_evaluate else 0
    counts = {"train": num_sampled(fed), "evaluate": evaluate}
    return Roster(seed=fed.seed, counts=counts, timeout=fed.round_timeout, num_sites=fed.num_sites)


def train_phase(config: Config, strategy: Strategy, grid: Grid) -> TrainPhase:
    """How rounds train: through SecAgg+, or in the clear (with central DP's wrapper)."""
    if config.federation.secure_aggregation.enabled:
        return SecureTraining(config, grid)
    if config.privacy.central.enabled:
        strategy = with_central_dp(strategy, config)
    fed = config.federation
    return plain_training(strategy, grid, timeout=fed.round_timeout, compression=fed.compression)


def federate(grid: Grid, config: Config, run: RunFolder, *, echo: Echo = print) -> FederationResult:
    """Run (or, when ``run`` holds a checkpoint, continue) ``config``'s rounds on ``grid``."""
    fed = config.federation
    strategy = build_strategy(
        fed.strategy,
        num_sites=fed.num_sites,
        fraction_train=fed.fraction_train,
        fraction_evaluate=fed.fraction_evaluate,
        options=fed.strategy_options,
        presampled=True,
    )
    trainer = train_phase(config, strategy, grid)
    privacy = PrivacyLog(config.privacy) if config.privacy.enabled else None
    central = config.privacy.central
    central_dp = CentralLedger(central, num_sampled(config.federation)) if central.enabled else None
    first, arrays = 0, initial_adapters(config)
    start = arrays  # the zero-shot adapters the test split scores beside the final ones
    selection = Selection(fed.select, TASKS[config.train.task].metric)
    chosen_on = SELECTION_SPLITS[fed.select_on].record_key
    if (run.path / CHECKPOINT).is_file():
        checkpoint = _resume(run, config.federation, strategy)
        arrays, first = checkpoint.arrays, checkpoint.round + 1
        selection.restore(checkpoint.selection)
        selection.offer(checkpoint.round, arrays, run.records()[-1][chosen_on])
        if privacy is not None:
            privacy.restore(checkpoint.privacy)
        if central_dp is not None:
            central_dp.restore(checkpoint.central)
        echo(f"resuming {run.path} after round {checkpoint.round}")
    wait_for_nodes(grid, fed.num_sites, timeout=fed.round_timeout)
    roster = site_roster(config.federation)
    roster.identify(grid)
    echo(f"sites: {roster.describe(grid.get_node_ids())}")
    for rnd in range(first, fed.num_rounds + 1):
        started = time.perf_counter()
        outcome = run_round(
            strategy,
            grid,
            arrays,
            rnd,
            timeout=fed.round_timeout,
            train=rnd > 0,
            settings=privacy.settings() if privacy is not None else None,
            trainer=trainer,
            roster=roster,
        )
        arrays = outcome.arrays
        for warning in outcome.warnings:
            echo(warning)
        record = _record(config, rnd, outcome, started)
        selection.offer(rnd, arrays, record[chosen_on])
        if privacy is not None:
            record["privacy"] = privacy.update(outcome.ledgers, outcome.refusals)
        if central_dp is not None:
            record["central_dp"] = central_dp.update(outcome.trained)
        run.log(record)
        save_checkpoint(
            run.path,
            server_round=rnd,
            name=fed.strategy,
            arrays=arrays,
            strategy=strategy,
            privacy=privacy.state() if privacy is not None else None,
            central=central_dp.state() if central_dp is not None else None,
            selection=selection.state(),
        )
        echo(progress_line(config, record))
        if "audit" in record.get("privacy", {}):
            echo(audit_line(record["privacy"]["audit"]))
        if _stop_for_budget(config.privacy, record, echo):
            break
    assert selection.arrays is not None  # every round, round 0 included, was offered
    if fed.select != "last":
        echo(
            f"final adapters: round {selection.round} ({selection.metric} "
            f"{selection.value:.1f} on {SELECTION_SPLITS[fed.select_on].described})"
        )
    test = {}
    if fed.central_eval:
        test = score_test_split(config, {"zero_shot": start, "final": selection.arrays})
        echo(f"test split, read once (round {selection.round}): {figures_line(config.train, test)}")
    return FederationResult(
        run.path,
        run.records(),
        selection.arrays,
        backbone_bytes(config),
        selection.round,
        list(getattr(strategy, "rejections", [])),
        test,
    )


def figures_line(train: TrainConfig, test: dict[str, dict[str, float]]) -> str:
    """``r1_mean 38.2 (zero-shot 14.1)``: the test split's two figures."""
    metric = TASKS[train.task].metric
    final, zero = (
        test["final"].get(metric, float("nan")),
        test["zero_shot"].get(metric, float("nan")),
    )
    return f"{metric} {final:.1f} (zero-shot {zero:.1f})"
