"""Privacy-utility sweep: a federated setting at several target epsilons, site sizes and seeds.

Each point is one whole federated run (the ``fedgray run`` server and sites on an
in-process :class:`~fedgray.fl.simulation.local_grid.LocalGrid`, one backbone for all),
written as its own run folder inside the sweep's folder; the sweep then writes
``sweep.csv`` (one row per point: target and achieved epsilon, noise, final metrics) and
``privacy_utility.png`` (the task's metric against epsilon, with zero-shot and non-private
lines)::

    fedgray sweep [CONFIG] [--epsilons inf,8,4,2,1] [--seeds 2] [--site-sizes 200,1000]
        [--reference CONFIG] [--grid KEY=V1,V2 ...] [--rounds R] [--local-steps S]
        [--delta 1e-5] [--output DIR] [--set KEY=VALUE ...]

``--site-sizes`` runs every point at each number of training examples per site (after
``federation.holdout``; ``data.train_size`` is set to hold exactly that many). Every row
then also says which fraction of the non-private gain over zero-shot it keeps,
``(metric - zero-shot) / (non-private - zero-shot)`` with the non-private run of the same
site size and seed (``inf`` among the epsilons), and ``gain.png`` plots that fraction
against epsilon, one line per site size (mean over seeds, spread as a band).

    python -m simulations.privacy_utility ...   (the same arguments)

``--reference CONFIG`` runs the non-private points from another config: the strongest
non-private recipe on the same data (for example DGA, against a private recipe that trains
the output adapter alone), so that the fraction kept is measured against what a site would
get without privacy rather than against the private recipe with its noise turned off. It
takes the same overrides (``--set``, ``--rounds``, ``--local-steps``, site size, seed), and
must describe the same data, sites and rounds (backbone, dataset and its sizes and seed,
task, sites, rounds, partition); a difference is one line naming the field, before anything
runs.

``--grid KEY=V1,V2`` (repeatable) chooses every point's recipe among the combinations of
those values on the validation split, every trial at the one epsilon with which each
site's ledger over all ``k`` trials, composed by one accountant, stays within the target, and
reports the grid's whole privacy cost beside the winner's test figure (see
:mod:`fedgray.sweep_grid`).

A classification sweep also fits a linear probe on the frozen backbone's image features
once per site size (:mod:`fedgray.sweep_probe`: all sites' training data pooled, its
regularisation chosen on validation, no DP) and reports its test accuracy in every row
(``linear_probe_accuracy``), in the table and as a line on the plot: the floor that
adaptation should beat.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgray.config import Config
from fedgray.config_schema import get_dotted
from fedgray.resolver import load_config
from fedgray.sweep_point import Echo, Point, check_site_size, run_point, size_overrides

DEFAULT_CONFIG = "configs/quickstart.yaml"
DEFAULT_EPSILONS = (math.inf, 8.0, 4.0, 2.0, 1.0)
SAME_DATA = (  # what a --reference config must share with the swept one
    "backbone.name",
    "backbone.pretrained",
    "data.dataset",
    "data.train_size",
    "data.test_size",
    "data.seed",
    "train.task",
    "federation.num_sites",
    "federation.num_rounds",
    "federation.holdout",
    "federation.partitioner",
    "federation.alpha",
    "federation.domains",
)
PROBE = "linear_probe_accuracy"  # the classification floor's column (fedgray.sweep_probe)


def check_reference(swept: Config, reference: Config, *, site_sizes: bool) -> None:
    """Raise a one-line ``ValueError`` naming the first :data:`SAME_DATA` field in which
    ``reference`` differs from ``swept`` (``data.train_size`` is skipped with
    ``site_sizes``: the sweep then sets it for both)."""
    swept_values, reference_values = swept.to_dict(), reference.to_dict()
    for name in SAME_DATA:
        ours, theirs = get_dotted(swept_values, name), get_dotted(reference_values, name)
        if ours != theirs and not (site_sizes and name == "data.train_size"):
            raise ValueError(
                f"--reference: {name} is {theirs!r} there and {ours!r} in the swept config "
                "(the gain kept compares runs on the same data, sites and rounds)"
            )


def with_gains(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``gain_kept``: the fraction of the non-private run's gain over zero-shot
    (same site size and seed) that each run keeps; None where that run is missing or gained
    nothing."""
    metric = rows[0]["metric"] if rows else ""
    reference = {(r["site_size"], r["seed"]): r for r in rows if math.isinf(r["target_epsilon"])}
    out = []
    for row in rows:
        base = reference.get((row["site_size"], row["seed"]))
        gain = None
        if base is not None:
            zero = base[f"zero_shot_{metric}"]
            if base[metric] > zero:
                gain = round((row[metric] - zero) / (base[metric] - zero), 4)
        out.append({**row, "gain_kept": gain})
    return out


def plot_gains(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """The fraction of the non-private gain kept against target epsilon, one line per site
    size: mean over seeds, min-max over seeds as a band (None: nothing private to plot)."""
    from fedgray.plots import plt

    private = [
        r for r in rows if r["gain_kept"] is not None and not math.isinf(r["target_epsilon"])
    ]
    if not private:
        return None
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for size in sorted({r["site_size"] or 0 for r in private}):
        mine = [r for r in private if (r["site_size"] or 0) == size]
        xs = sorted({r["target_epsilon"] for r in mine})
        values = [[r["gain_kept"] for r in mine if r["target_epsilon"] == x] for x in xs]
        means = [sum(v) / len(v) for v in values]
        label = f"{size} per site" if size else "as configured"
        (line,) = axes.plot(xs, means, marker="o", label=label)
        axes.fill_between(
            xs,
            [min(v) for v in values],
            [max(v) for v in values],
            alpha=0.2,
            color=line.get_color(),
        )
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="non-private")
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.set_xscale("log", base=2)
    ticks = sorted({r["target_epsilon"] for r in private})
    axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
    axes.set_xlabel("target epsilon (whole run)")
    axes.set_ylabel("fraction of non-private gain kept")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


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
    probes = [r[PROBE] for r in rows if r.get(PROBE) is not None]
    if probes:
        baselines["linear probe (no DP)"] = sum(probes) / len(probes)
    return plot_sweep(
        finite,
        samples,
        path,
        xlabel="target epsilon (whole run)",
        ylabel=metric,
        title=title,
        baselines=baselines,
    )


def _probe_floor(config_path: str, overrides: Sequence[str], point: Point) -> dict[str, float]:
    """The linear probe of ``point``'s data (:mod:`fedgray.sweep_probe`): one per site size."""
    from fedgray.sweep_probe import probe_accuracy

    sizes = size_overrides(config_path, overrides, point)
    return probe_accuracy(load_config(config_path, [*overrides, *sizes]))


def sweep(
    config_path: str,
    overrides: Sequence[str],
    *,
    epsilons: Sequence[float],
    seeds: int,
    delta: float,
    site_sizes: Sequence[int] = (),
    reference: str | None = None,
    grid: Sequence[tuple[str, list[str]]] = (),
    root: str | Path | None = None,
    echo: Echo = print,
    round_lines: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run every (site size, epsilon, seed) point; the sweep folder and its rows. The
    non-private points run ``reference`` where given (checked first: :func:`check_reference`).
    With a ``grid``, every point chooses its recipe from it on the validation split, under a
    split budget (:mod:`fedgray.sweep_grid`). ``echo`` gets a line per point and, with
    ``round_lines``, the per-round progress lines of each run."""
    from fedgray.runs import RunFolder
    from fedgray.sweep_grid import candidates, run_grid_point

    config = load_config(config_path, list(overrides))
    for recipe in candidates(grid):  # every trial's config is valid before anything runs
        load_config(config_path, [*overrides, *recipe, "federation.select_on=validation"])
    if reference is not None:
        if not any(math.isinf(e) for e in epsilons):
            raise ValueError(
                "--reference: needs inf among --epsilons (it runs the non-private points)"
            )
        check_reference(
            config, load_config(reference, list(overrides)), site_sizes=bool(site_sizes)
        )
    for path in dict.fromkeys(p for p in (config_path, reference) if p is not None):
        for per_site in site_sizes:
            check_site_size(path, overrides, per_site)
    folder = RunFolder(root or config.output.root, prefix="sweep")
    sizes: Sequence[int | None] = list(site_sizes) or [None]
    points = [
        Point(eps, seed, size)
        for seed in range(seeds)
        for size in sizes
        for eps in sorted(epsilons, key=lambda e: -e)  # the non-private reference first
    ]
    folder.write_json(
        "sweep.json",
        {
            "config": str(config_path),
            "overrides": list(overrides),
            "epsilons": [str(e) for e in epsilons],
            "seeds": seeds,
            "site_sizes": list(site_sizes),
            "reference": reference,
            "grid": {key: values for key, values in grid},
            "delta": delta,
        },
    )
    rows: list[dict[str, Any]] = []
    floors: dict[int | None, dict[str, float]] = {}
    for index, point in enumerate(points, 1):
        size = "" if point.site_size is None else f", {point.site_size} per site"
        echo(f"[{index}/{len(points)}] target epsilon {point.epsilon:g}{size}, seed {point.seed}")
        path = reference if reference is not None and math.isinf(point.epsilon) else config_path
        lines: Echo = (lambda line: echo(f"  {line}")) if round_lines else (lambda _: None)
        if grid:
            row = run_grid_point(
                path, overrides, point, grid, root=folder.path, delta=delta, echo=lines
            )
        else:
            row = run_point(path, overrides, point, root=folder.path, delta=delta, echo=lines)
        if config.train.task == "classification":
            if point.site_size not in floors:
                floors[point.site_size] = _probe_floor(config_path, overrides, point)
            row = {**row, **floors[point.site_size]}
        rows.append(row)
        rows = with_gains(rows)
        write_csv(rows, folder.path / "sweep.csv")  # partial results survive an interruption
    fed = config.federation
    title = f"{fed.num_sites} sites x {fed.num_rounds} rounds · {config.data.dataset}"
    plot_rows(rows, folder.path / "privacy_utility.png", title=title)
    plot_gains(rows, folder.path / "gain.png", title=title)
    return folder.path, rows


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as printable lines."""
    metric = rows[0]["metric"]
    lines = [
        f"{'site size':>9} {'target eps':>10} {'seed':>4} {'achieved':>9} {'sigma':>7} "
        f"{metric:>8} {'gain kept':>9} {'s':>6}"
    ]
    for r in rows:
        sigma = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
        size = "-" if r["site_size"] is None else str(r["site_size"])
        gain = "-" if r["gain_kept"] is None else f"{r['gain_kept']:.0%}"
        lines.append(
            f"{size:>9} {r['target_epsilon']:>10g} {r['seed']:>4} "
            f"{r['achieved_max_epsilon']:>9.4f} {sigma:>7} {r[metric]:>8.1f} {gain:>9} "
            f"{r['seconds']:>6.0f}"
        )
    lines.append(f"zero-shot {metric}: {rows[0][f'zero_shot_{metric}']:.1f}")
    for size in dict.fromkeys(r["site_size"] for r in rows if r.get(PROBE) is not None):
        probe = next(r[PROBE] for r in rows if r["site_size"] == size)
        where = "" if size is None else f" ({size} per site)"
        lines.append(f"linear probe{where}, all sites' data pooled, no DP: {probe:.1f}")
    return lines


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"epsilons must be > 0 (inf: no DP): {text}")
    return values


def _site_sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"site sizes must be >= 1: {text}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's own arguments; ``fedgray sweep`` adds CONFIG, ``--set`` and ``--quiet``."""
    from fedgray.sweep_grid import grid_axis

    parser.add_argument(
        "--epsilons",
        type=_epsilons,
        default=list(DEFAULT_EPSILONS),
        help="comma-separated target epsilons for the whole run; inf: no DP (default: inf,8,4,2,1)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="seeds 0..N-1 (federation.seed; default 2: one seed gives no spread, and the "
        "same setting moves by a few points between seeds)",
    )
    parser.add_argument(
        "--site-sizes",
        type=_site_sizes,
        default=[],
        help="comma-separated training examples per site (sets data.train_size; default: "
        "the config's)",
    )
    parser.add_argument(
        "--reference",
        metavar="CONFIG",
        help="config of the non-private points (same data, sites and rounds; default: CONFIG "
        "without DP)",
    )
    parser.add_argument(
        "--grid",
        type=grid_axis,
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="choose each point's recipe among these values (repeat for more keys) on the "
        "validation split, the k trials' composed epsilon within the point's target",
    )
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
        site_sizes=args.site_sizes,
        reference=args.reference,
        grid=args.grid,
        root=args.output,
        round_lines=not args.quiet,
    )
    print()
    for line in table(rows):
        print(line)
    print(f"{time.perf_counter() - started:.0f} s; sweep folder: {folder}")
