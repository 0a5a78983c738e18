"""A sweep point whose recipe is chosen from a fixed grid, the choice paid for in privacy.

``fedgray sweep --grid train.lr=0.02,0.05 --grid federation.local_steps=5,10`` runs, at
every point, each combination of the grid's values (``k`` trials) as its own federated run,
every trial at the one epsilon with which each site's ledger over all ``k`` trials,
composed by one accountant, stays within the point's target
(:func:`fedgray.privacy.grid.trial_epsilon`). It scores each trial's adapters on the
server's validation split (``federation.select_on: validation``, drawn from the training
pool: no site's data, never the test split) and reports the winner's test figure. The
trials never read the test split (``federation.central_eval: false``: their run folders
keep their final adapters and every round's validation figure); once the winner is
chosen, its saved adapters, and the initial ones for the zero-shot figure, are scored on
the test split: the point's one test reading, without training anything again. The
point's row then carries the grid's whole cost (``selection_epsilon``: each site's ledger
over every trial, the largest over sites) beside the winner's own epsilon; its folder
holds every trial's run and ``selection.json``, the ledger of the choice, in which only
the winner has a test figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from fedgray.config import Config
from fedgray.privacy.grid import SitePlans, selection_cost, trial_epsilon
from fedgray.privacy.ledger import Ledger
from fedgray.resolver import load_config
from fedgray.sweep_point import Echo, Point, point_config, run_point

Grid = Sequence[tuple[str, list[str]]]  # (dotted key, its values as YAML text)
TRIAL = ["federation.select_on=validation", "federation.central_eval=false"]
"""Every trial's overrides: scored on validation every round, the test split never read."""


def grid_axis(text: str) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` as an argparse type: the key and its values (at least one)."""
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",")] if sep else []
    if not key.strip() or not items or not all(items):
        raise argparse.ArgumentTypeError(f"--grid: expected KEY=V1,V2,..., got {text!r}")
    for item in items:
        try:
            yaml.safe_load(item)
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"--grid {key}: cannot parse {item!r}") from None
    return key.strip(), items


def candidates(grid: Grid) -> list[list[str]]:
    """Every combination of the grid's values, as config overrides, in a fixed order."""
    keys = [key for key, _ in grid]
    return [
        [f"{key}={value}" for key, value in zip(keys, combo, strict=True)]
        for combo in itertools.product(*(values for _, values in grid))
    ]


def _ledgers(run_dir: Path) -> dict[int, Ledger]:
    """The sites' ledgers at the end of a run (none without DP)."""
    from fedgray.fl.serverapp.checkpoint import load_checkpoint

    return {
        int(site): Ledger(entry["accountant"], tuple(tuple(e) for e in entry["history"]))
        for site, entry in (load_checkpoint(run_dir).privacy or {}).items()
    }


def site_plans(config: Config) -> SitePlans:
    """Each site's DP-SGD sample rate and planned steps in the run of ``config`` (as its
    trainer plans them: ``fedgray.train.trainer``)."""
    from fedgray.fl.common.partitions import train_counts
    from fedgray.privacy.engine import poisson_rate
    from fedgray.train.schedule import Schedule

    batch, steps = config.train.batch_size, Schedule.federated(config, 1).planned
    return {site: (poisson_rate(batch, n), steps) for site, n in enumerate(train_counts(config))}


def best_trial(rows: Sequence[dict[str, Any]]) -> int:
    """The trial with the highest validation score (ties: the earlier one)."""
    metric = rows[0]["metric"]
    scores = [row[f"validation_{metric}"] for row in rows]
    if any(score is None for score in scores):
        raise ValueError("a grid trial reported no validation score")
    return max(range(len(rows)), key=lambda i: (scores[i], -i))


def _trial_entry(recipe: list[str], row: dict[str, Any]) -> dict[str, Any]:
    """One trial in ``selection.json``: its recipe, run, epsilon and validation score."""
    score = f"validation_{row['metric']}"
    keys = ("run", "achieved_max_epsilon", score)
    return {"recipe": recipe, **{key: row[key] for key in keys}}


def read_test_once(run_dir: Path) -> dict[str, dict[str, float]]:
    """The chosen trial's saved adapters (``adapters.pt``) and the initial ones scored on
    the server's test split, which its run skipped; its ``summary.json`` and
    ``report.html`` then name the test split, as an ordinary run's do."""
    from fedgray.fl.common.records import to_record
    from fedgray.fl.serverapp.report import ON_TEST, compared
    from fedgray.fl.serverapp.server import initial_adapters, score_test_split
    from fedgray.run_report import write_report
    from fedgray.runs import RunFolder, load_adapters
    from fedgray.tasks import TASKS

    config = load_config(run_dir / "config.yaml")
    state, _ = load_adapters(run_dir / "adapters.pt", backbone=config.backbone.name)
    final = to_record(state)
    test = score_test_split(config, {"zero_shot": initial_adapters(config), "final": final})
    run = RunFolder(run_dir.parent, run_dir.name)
    summary = json.loads((run.path / "summary.json").read_text())
    summary.update(evaluated_on=ON_TEST, **{name: compared(s) for name, s in test.items()})
    run.write_json("summary.json", summary)
    write_report(run.path, metric=TASKS[config.train.task].metric)
    return test


def run_grid_point(
    config_path: str,
    overrides: Sequence[str],
    point: Point,
    grid: Grid,
    *,
    root: Path,
    delta: float,
    echo: Echo,
) -> dict[str, Any]:
    """Run every candidate of ``grid`` at ``point``, calibrated to share its budget, into
    ``root / point.name``; the winner's row, with its test figures, the grid's cost and
    its recipe."""
    from fedgray.fl.serverapp.report import COMPARED

    trials = candidates(grid)
    folder = root / point.name
    epsilon = point.epsilon
    if not math.isinf(epsilon):
        configs = [point_config(config_path, [*overrides, *r], point, root=folder, delta=delta)
                   for r in trials]  # fmt: skip
        plans = [site_plans(config) for config in configs]
        epsilon = trial_epsilon(epsilon, delta, plans, accountant=configs[0].privacy.accountant)
    folder.mkdir(parents=True, exist_ok=True)
    rows, ledgers = [], []
    for index, recipe in enumerate(trials):
        echo(f"trial {index + 1}/{len(trials)}: {' '.join(recipe)} at epsilon {epsilon:g}")
        trial = replace(point, epsilon=epsilon, trial=index)
        chosen_on = [*overrides, *recipe, *TRIAL]
        rows.append(run_point(config_path, chosen_on, trial, root=folder, delta=delta, echo=echo))
        ledgers.append(_ledgers(folder / trial.name))
    winner = best_trial(rows)
    test = read_test_once(folder / rows[winner]["run"])
    cost = {} if math.isinf(point.epsilon) else selection_cost(ledgers, delta=delta)
    spent = max(cost.values(), default=0.0)
    metric = rows[winner]["metric"]
    entries = [_trial_entry(recipe, row) for recipe, row in zip(trials, rows, strict=True)]
    entries[winner][f"test_{metric}"] = test["final"][metric]  # the only test figure
    ledger = {
        "target_epsilon": point.epsilon,
        "delta": delta,
        "trial_epsilon": epsilon,
        "trial_delta": delta,
        "trials": entries,
        "chosen": winner,
        "chosen_on": "the server's validation split",
        "selection_epsilon_per_site": {str(site): eps for site, eps in cost.items()},
        "selection_epsilon": spent,
    }
    (folder / "selection.json").write_text(json.dumps(ledger, indent=1))
    row = rows[winner]
    return {
        **row,
        **{key: test["final"].get(key) for key in COMPARED},
        f"zero_shot_{metric}": test["zero_shot"][metric],
        "target_epsilon": point.epsilon,
        "delta": None if math.isinf(point.epsilon) else delta,
        "trials": len(trials),
        "recipe": " ".join(trials[winner]),
        "selection_epsilon": None if math.isinf(point.epsilon) else spent,
        "run": f"{point.name}/{row['run']}",
    }
