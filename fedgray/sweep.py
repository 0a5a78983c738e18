"""Privacy-utility sweep: a federated setting at several target epsilons (and seeds).

Each point is one whole federated run (the ``fedgray run`` server and sites on an
in-process :class:`~fedgray.fl.local_grid.LocalGrid`, one backbone for all), written as its
own run folder inside the sweep's folder; the sweep then writes ``sweep.csv`` (one row per
point: target and achieved epsilon, noise, final metrics) and ``privacy_utility.png``
(the task's metric against epsilon, with zero-shot and non-private lines)::

    fedgray sweep [CONFIG] [--epsilons inf,8,4,2,1] [--seeds 1]
        [--rounds R] [--local-steps S] [--delta 1e-5] [--output DIR] [--set KEY=VALUE ...]
    python -m simulations.privacy_utility ...   (the same arguments)

CONFIG defaults to ``configs/quickstart.yaml``; ``--quiet`` leaves out the per-round
lines. A finite epsilon is DP-SGD at every site with ``privacy.target_epsilon`` for the
whole planned run (all rounds); ``inf`` is the non-private run. The achieved epsilon is
the largest any site's accountant reported. Flower, the federated layer and matplotlib are
imported when a sweep runs, not with ``fedgray``'s argument parser.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedgray.config import load_config

DEFAULT_CONFIG = "configs/quickstart.yaml"
DEFAULT_EPSILONS = (math.inf, 8.0, 4.0, 2.0, 1.0)
Echo = Callable[[str], None]


def _yaml_float(value: float) -> str:
    """``value`` as a YAML number (YAML reads ``1e-05``, without a dot, as a string)."""
    return np.format_float_positional(value, trim="-")


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a target epsilon (``inf``: no DP) and a seed."""

    epsilon: float
    seed: int

    @property
    def name(self) -> str:
        """The point's run folder name, e.g. ``eps4-seed0``."""
        return f"eps{self.epsilon:g}-seed{self.seed}"

    def overrides(self, *, delta: float) -> list[str]:
        """Config overrides of this point."""
        if math.isinf(self.epsilon):
            privacy = ["privacy.enabled=false"]
        else:
            privacy = [
                "privacy.enabled=true",
                "privacy.noise_multiplier=null",
                f"privacy.target_epsilon={_yaml_float(self.epsilon)}",
                f"privacy.delta={_yaml_float(delta)}",
            ]
        return [*privacy, f"federation.seed={self.seed}", f"output.name={self.name}"]


def _worst_site(run_dir: Path) -> dict[str, Any]:
    """Noise multiplier, sample rate and steps of the site with the largest epsilon."""
    from fedgray.fl.checkpoint import load_checkpoint

    ledgers = load_checkpoint(run_dir).privacy
    if not ledgers:
        return {}
    site = max(ledgers, key=lambda s: ledgers[s]["epsilon"])
    history = ledgers[site]["history"]
    return {
        "noise_multiplier": history[-1][0],
        "sample_rate": history[-1][1],
        "steps": sum(int(steps) for _, _, steps in history),
    }


def run_point(
    config_path: str,
    overrides: Sequence[str],
    point: Point,
    *,
    root: Path,
    delta: float,
    echo: Echo,
) -> dict[str, Any]:
    """Run one point into ``root / point.name``; its CSV row. ``echo`` gets its round lines."""
    from fedgray.fl.local_grid import run_local
    from fedgray.fl.report import COMPARED
    from fedgray.tasks import TASKS

    config = load_config(
        config_path, [*overrides, f"output.root={root}", *point.overrides(delta=delta)]
    )
    started = time.perf_counter()
    result, summary, _ = run_local(config, echo=echo)
    privacy = result.records[-1].get("privacy")
    metric = TASKS[config.train.task].metric
    return {
        "target_epsilon": point.epsilon,
        "seed": point.seed,
        "achieved_max_epsilon": math.inf if privacy is None else privacy["max_epsilon"],
        "delta": None if privacy is None else privacy["delta"],
        "accountant": None if privacy is None else privacy["accountant"],
        "noise_multiplier": None,
        "sample_rate": None,
        "steps": None,
        **_worst_site(result.run_dir),
        **{k: summary["final"][k] for k in COMPARED},
        "metric": metric,
        f"zero_shot_{metric}": summary["zero_shot"][metric],
        "seconds": round(time.perf_counter() - started, 1),
        "run": point.name,
    }


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One line per point; empty cells for what does not apply (no DP: no noise)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return path


def plot_rows(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """The task's metric against target epsilon; zero-shot and non-private as lines."""
    from fedgray.plots import plot_sweep

    metric = rows[0]["metric"]
    finite = sorted({r["target_epsilon"] for r in rows if not math.isinf(r["target_epsilon"])})
    samples = [[r[metric] for r in rows if r["target_epsilon"] == eps] for eps in finite]
    baselines = {"zero-shot": rows[0][f"zero_shot_{metric}"]}
    private = [r[metric] for r in rows if math.isinf(r["target_epsilon"])]
    if private:
        baselines["non-private"] = sum(private) / len(private)
    return plot_sweep(
        finite,
        samples,
        path,
        xlabel="target epsilon (whole run)",
        ylabel=metric,
        title=title,
        baselines=baselines,
    )


def sweep(
    config_path: str,
    overrides: Sequence[str],
    *,
    epsilons: Sequence[float],
    seeds: int,
    delta: float,
    root: str | Path | None = None,
    echo: Echo = print,
    round_lines: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run every (epsilon, seed) point; the sweep folder and its rows. ``echo`` gets a line
    per point and, with ``round_lines``, the per-round progress lines of each run."""
    from fedgray.runs import RunFolder

    config = load_config(config_path, list(overrides))
    folder = RunFolder(root or config.output.root, prefix="sweep")
    points = [Point(eps, seed) for seed in range(seeds) for eps in epsilons]
    folder.write_json(
        "sweep.json",
        {
            "config": str(config_path),
            "overrides": list(overrides),
            "epsilons": [str(e) for e in epsilons],
            "seeds": seeds,
            "delta": delta,
        },
    )
    rows = []
    for index, point in enumerate(points, 1):
        echo(f"[{index}/{len(points)}] target epsilon {point.epsilon:g}, seed {point.seed}")
        rows.append(
            run_point(
                config_path,
                overrides,
                point,
                root=folder.path,
                delta=delta,
                echo=(lambda line: echo(f"  {line}")) if round_lines else (lambda _: None),
            )
        )
        write_csv(rows, folder.path / "sweep.csv")  # partial results survive an interruption
    fed = config.federation
    title = f"{fed.num_sites} sites x {fed.num_rounds} rounds · {config.data.dataset}"
    plot_rows(rows, folder.path / "privacy_utility.png", title=title)
    return folder.path, rows


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as printable lines."""
    metric = rows[0]["metric"]
    lines = [f"{'target eps':>10} {'seed':>4} {'achieved':>9} {'sigma':>7} {metric:>8} {'s':>6}"]
    for r in rows:
        sigma = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
        lines.append(
            f"{r['target_epsilon']:>10g} {r['seed']:>4} {r['achieved_max_epsilon']:>9.4f} "
            f"{sigma:>7} {r[metric]:>8.1f} {r['seconds']:>6.0f}"
        )
    lines.append(f"zero-shot {metric}: {rows[0][f'zero_shot_{metric}']:.1f}")
    return lines


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"epsilons must be > 0 (inf: no DP): {text}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's own arguments; ``fedgray sweep`` adds CONFIG, ``--set`` and ``--quiet``."""
    parser.add_argument(
        "--epsilons",
        type=_epsilons,
        default=list(DEFAULT_EPSILONS),
        help="comma-separated target epsilons for the whole run; inf: no DP (default: inf,8,4,2,1)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (federation.seed)")
    parser.add_argument("--rounds", type=int, help="federation.num_rounds (default: the config's)")
    parser.add_argument("--local-steps", type=int, help="federation.local_steps")
    parser.add_argument("--delta", type=float, default=1e-5, help="privacy.delta (default 1e-5)")
    parser.add_argument("--output", metavar="DIR", help="root of the sweep folder")


def run(args: argparse.Namespace) -> None:
    """Run the sweep of parsed ``args`` and print its table, folder and wall time."""
    if args.seeds < 1:
        raise ValueError(f"--seeds: must be >= 1, got {args.seeds}")
    overrides = list(args.overrides)
    if args.rounds is not None:
        overrides.append(f"federation.num_rounds={args.rounds}")
    if args.local_steps is not None:
        overrides.append(f"federation.local_steps={args.local_steps}")
    import flwr.common  # noqa: F401 - Flower sets its logger's level when first imported

    logging.getLogger("flwr").setLevel(logging.WARNING)  # our own progress lines instead
    started = time.perf_counter()
    folder, rows = sweep(
        args.config or DEFAULT_CONFIG,
        overrides,
        epsilons=args.epsilons,
        seeds=args.seeds,
        delta=args.delta,
        root=args.output,
        round_lines=not args.quiet,
    )
    print()
    for line in table(rows):
        print(line)
    print(f"{time.perf_counter() - started:.0f} s; sweep folder: {folder}")
