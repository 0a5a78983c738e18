"""A sweep point whose recipe is chosen from a fixed grid, the choice paid for in privacy.

``fedgray sweep --grid train.lr=0.02,0.05 --grid federation.local_steps=5,10`` runs, at
every point, each combination of the grid's values (``k`` trials) as its own federated run
at ``(epsilon / k, delta / k)`` (:mod:`fedgray.privacy.grid`), scores each trial's
adapters on the server's validation split (``federation.select_on: validation``, drawn from
the training pool: no site's data, never the test split) and reports the winner's test
figure. The point's row then carries the grid's whole cost (``selection_epsilon``: each
site's ledger over every trial, the largest over sites) beside the winner's own epsilon;
its folder holds every trial's run and ``selection.json``, the ledger of the choice.
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

from fedgray.privacy.grid import selection_cost, split_budget
from fedgray.privacy.ledger import Ledger
from fedgray.sweep_point import Echo, Point, run_point

Grid = Sequence[tuple[str, list[str]]]  # (dotted key, its values as YAML text)


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
    """Run every candidate of ``grid`` at ``point`` under the split budget into
    ``root / point.name``; the winner's row, with the grid's cost and recipe."""
    trials = candidates(grid)
    epsilon, trial_delta = split_budget(point.epsilon, delta, len(trials))
    folder = root / point.name
    folder.mkdir(parents=True, exist_ok=True)
    rows, ledgers = [], []
    for index, recipe in enumerate(trials):
        echo(f"trial {index + 1}/{len(trials)}: {' '.join(recipe)} at epsilon {epsilon:g}")
        trial = replace(point, epsilon=epsilon, trial=index)
        chosen_on = [*overrides, *recipe, "federation.select_on=validation"]
        rows.append(
            run_point(config_path, chosen_on, trial, root=folder, delta=trial_delta, echo=echo)
        )
        ledgers.append(_ledgers(folder / trial.name))
    winner = best_trial(rows)
    cost = {} if math.isinf(point.epsilon) else selection_cost(ledgers, delta=delta)
    spent = max(cost.values(), default=0.0)
    ledger = {
        "target_epsilon": point.epsilon,
        "delta": delta,
        "trial_epsilon": epsilon,
        "trial_delta": trial_delta,
        "trials": [_trial_entry(recipe, row) for recipe, row in zip(trials, rows, strict=True)],
        "chosen": winner,
        "chosen_on": "the server's validation split",
        "selection_epsilon_per_site": {str(site): eps for site, eps in cost.items()},
        "selection_epsilon": spent,
    }
    (folder / "selection.json").write_text(json.dumps(ledger, indent=1))
    row = rows[winner]
    return {
        **row,
        "target_epsilon": point.epsilon,
        "delta": None if math.isinf(point.epsilon) else delta,
        "trials": len(trials),
        "recipe": " ".join(trials[winner]),
        "selection_epsilon": None if math.isinf(point.epsilon) else spent,
        "run": f"{point.name}/{row['run']}",
    }
