"""The ``fedgray bench`` subcommand: run the sections, print and write the table."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from . import sections
from .device import throughput
from .federation import federation
from .isolated import RuntimeStart, isolation
from .report import conditions, markdown, write
from .scaling import SITE_COUNTS, curve
from .secagg import DEPLOYED_SITES, SIMULATED_SITES, Plan, bench_secagg
from .sections import Figure, Sizes

DESCRIPTION = (
    "Measure what fedgray costs on this machine, as ratios of modes timed side by side in "
    "one run (interleaved after warm-up, medians of repetitions): the gray-box DGA step "
    "against full fine-tuning and LoRA (time, peak memory), DP-SGD and the isolated runtime "
    "against plain in-process steps, bytes a site sends per round against the backbone, "
    "output-side training over cached features, and the gray step's throughput against the "
    "device's own matmul ceiling. Writes bench.json and bench.md."
)


def run(sizes: Sizes, *, echo: Callable[[str], None]) -> list[Figure]:
    """Every section at ``sizes``, in order; each prints its figures as it ends."""
    jobs: list[tuple[str, Callable[[], list[Figure]]]] = [
        (f"methods on {name}", functools.partial(sections.methods, name, batch, sizes))
        for name, batch in sizes.models
    ]
    figures: list[Figure] = []
    with RuntimeStart() as start:  # the runtime starts now, while the other sections run
        jobs += [
            ("gray step throughput", lambda: throughput(sizes)),
            ("DP-SGD", lambda: sections.privacy(sizes)),
            ("cached features", lambda: sections.cached_features(sizes)),
            ("federation overhead", lambda: federation(sizes)),
            ("isolated runtime", lambda: isolation(start, sizes)),
        ]
        for label, job in jobs:
            echo(f"bench: {label} ...")
            found = job()
            for f in found:
                echo(f"  {f.name}: {f.value:.3f}{f.unit}")
            figures += found
    return figures


def _scaling(model: str, counts: tuple[int, ...], out: Path) -> int:
    """The scaling curve: one round at each site count, relative to the first."""
    rows = curve(model, counts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"one round of {model}, each site count in its own process:")
    print(f"| sites | peak memory vs {counts[0]} | wall time per site-step vs {counts[0]} |")
    print("|---|---|---|")
    for row in rows:
        print(
            f"| {row['sites']} | {row['memory_vs_first']:.2f}x | {row['site_step_vs_first']:.2f}x |"
        )
    return 0


def _secagg(args: argparse.Namespace) -> int:
    """The SecAgg+ table (see :mod:`.secagg`)."""
    if args.deployed_only and args.sites:
        print(
            "fedgray bench: error: --deployed-only: leaves out the simulated rows that --sites "
            "sets; give one or the other",
            file=sys.stderr,
        )
        return 2
    try:
        plan = Plan(
            simulated=() if args.deployed_only else args.sites or SIMULATED_SITES,
            deployed=args.deployed,
            rounds=args.rounds,
            blocks=args.blocks,
        )
    except ValueError as error:
        print(f"fedgray bench: error: {error}", file=sys.stderr)
        return 2
    text = bench_secagg(plan, Path(args.out), echo=lambda line: print(line, flush=True))
    sys.stdout.write("\n" + text)
    print(f"\nwrote {Path(args.out) / 'secagg.json'} and {Path(args.out) / 'secagg.md'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.secagg:
        return _secagg(args)
    if args.scaling is not None:
        return _scaling(args.scaling, args.sites or SITE_COUNTS, Path(args.out))
    command = "fedgray bench" + (" --quick" if args.quick else "")
    info = conditions(command)
    figures = run(
        sections.QUICK if args.quick else sections.FULL,
        echo=lambda line: print(line, flush=True),
    )
    info["load_average_end"] = os.getloadavg()[0]
    json_path, md_path = write(Path(args.out), figures, info)
    sys.stdout.write("\n" + markdown(figures, info))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def _site_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of site counts: {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"site counts must be >= 1: {text!r}")
    return counts


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``fedgray bench`` to the ``fedgray`` command's subparsers."""
    bench = commands.add_parser(
        "bench", help="measure costs as side-by-side ratios", description=DESCRIPTION
    )
    bench.add_argument("--quick", action="store_true", help="small sizes (CI: under a minute)")
    bench.add_argument(
        "--scaling",
        nargs="?",
        const=sections.SITE_MODEL,
        metavar="MODEL",
        help="instead of the table: one round's peak memory and wall time per site-step at "
        "each of --sites simulated sites, each in its own process (default model: "
        f"{sections.SITE_MODEL})",
    )
    bench.add_argument(
        "--secagg",
        action="store_true",
        help="instead of the table: a round's wall time and bytes per site with and without "
        "SecAgg+, at each of --sites simulated sites and --deployed sites on a loopback "
        "deployment (a real SuperLink and SuperNodes), side by side",
    )
    bench.add_argument(
        "--sites",
        type=_site_counts,
        default=None,
        metavar="N,N,...",
        help="site counts of --scaling, the first the reference (default: "
        f"{','.join(map(str, SITE_COUNTS))}), or of --secagg's simulated rows (default: "
        f"{','.join(map(str, SIMULATED_SITES))})",
    )
    bench.add_argument(
        "--deployed",
        type=int,
        default=DEPLOYED_SITES,
        metavar="N",
        help=f"--secagg: sites of the loopback deployment (default {DEPLOYED_SITES}; 0: none)",
    )
    bench.add_argument(
        "--deployed-only",
        action="store_true",
        help="--secagg: only the deployed row and the same sites simulated beside it (no "
        "--sites rows)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=Plan.rounds,
        help="--secagg: rounds per run, the first left out (it opens backbone and data)",
    )
    bench.add_argument(
        "--blocks",
        type=int,
        default=Plan.blocks,
        help="--secagg: pairs of runs (plain, SecAgg+) per row, in alternating order",
    )
    bench.add_argument("--out", default="bench", metavar="DIR", help="folder for the results")
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a busy machine more threads spin on each other's "
        "barriers and slow every mode many-fold, which drowns the ratios)",
    )
    bench.set_defaults(handler=_cmd_bench)
