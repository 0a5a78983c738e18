"""The audit's power over several seeds: the correct build and each planted DP bug
(:mod:`simulations.planted_bugs`), audited in the setting of ``tests/privacy/test_audit.py``.

Each seed changes the data, the canaries and their draw, and the training's randomness
(``data.seed``, ``--audit-seed``, ``train.seed``)::

    python -m simulations.audit_power --seeds 0 1 2 --output runs/audit-power

Writes ``results.md`` (per build: right guesses and bound, mean and standard deviation
over the seeds, in how many seeds the bound exceeded the accountant's epsilon, and in how
many the batches drawn refuted Poisson sampling) into the output folder and prints it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from fedgray.audit import AuditOptions, AuditResult, audit
from fedgray.resolver import load_config
from simulations.planted_bugs import BUGS, Setter, planted, shuffling
from simulations.tables import write_results

AUDITED = [
    "backbone.name=fedgray-tiny",
    "backbone.pretrained=null",
    "data.train_size=200",
    "data.test_size=40",
    "method.name=output",
    "train.batch_size=128",
    "train.steps=300",
    "train.lr=0.05",
    "train.threads=1",
    "privacy.enabled=true",
    "privacy.target_epsilon=1.0",
    "privacy.max_grad_norm=0.01",
    "privacy.cache_features=true",
]
"""DP-SGD on the output adapter over cached features of a random tiny CLIP (embedding 128),
at epsilon 1; a small clipping norm, so that clipping binds on every step."""

BUILDS: dict[str, Callable[[Setter], None] | None] = {
    "correct": None,
    **BUGS,
    "Poisson sampling replaced by shuffling": shuffling,
}


def audited(seed: int, root: Path) -> AuditResult:
    """One audit of :data:`AUDITED` at ``seed``, its defaults otherwise."""
    seeds = [f"data.seed={seed}", f"train.seed={seed}"]
    config = load_config(None, [*AUDITED, *seeds, f"output.root={root}"])
    return audit(config, options=AuditOptions(seed=seed), progress=False, echo=lambda _: None)


def _spread(values: Sequence[float], digits: int) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {deviation:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> None:
    """Audit every build of :data:`BUILDS` at each seed; print and write the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("::")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--builds", nargs="+", choices=list(BUILDS), default=list(BUILDS))
    parser.add_argument("--output", required=True, help="folder for results.md")
    args = parser.parse_args(argv)
    rows = [
        f"| build | right guesses (of 100) | empirical lower bound | accountant's epsilon "
        f"| bound above epsilon (of {len(args.seeds)} seeds) | batches refuted |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as root:
        for name in args.builds:
            bug = BUILDS[name]
            results = []
            for seed in args.seeds:
                with planted(bug):
                    results.append(audited(seed, Path(root)))
                found = results[-1]
                print(f"{name}, seed {seed}: {found.correct} right, bound {found.lower_bound:.2f}")
            rows.append(
                f"| {name} | {_spread([r.correct for r in results], 1)} "
                f"| {_spread([r.lower_bound for r in results], 2)} "
                f"| {_spread([r.epsilon for r in results], 2)} "
                f"| {sum(r.lower_bound > r.epsilon for r in results)} "
                f"| {sum(r.sampling is not None for r in results)} |"
            )
            print(rows[-1], flush=True)
    write_results(args.output, rows)


if __name__ == "__main__":
    main()
