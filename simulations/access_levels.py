"""What each level of model access buys: one table over the built-in target domains.

Runs ``fedgray adapt`` centrally for every (domain, method) pair on the same data, with
the task every method supports (classification: CraFT's setting), each run in a fresh
process so that its peak memory is its own, and writes ``results.csv`` and
``results.md`` into the output folder::

    python -m simulations.access_levels --output runs/access
    python -m simulations.access_levels --domains digits --methods zero-shot craft dga \\
        --steps 100 --queries 1000 --output /tmp/access

Columns: test accuracy (percent), trainable parameters, the run process's peak resident
memory (MB, interpreter and data included), wall time of training and evaluation
(seconds, backbone loading excluded) and the calls made to the backbone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fedgray.adapt import adapt
from fedgray.config import load_config
from simulations.compare_methods import CONFIG, write_tables

DOMAINS = ("world/sketch", "world/inverted", "world/noisy", "digits")
# method -> (access level, learning rate); white-box fine-tuning needs far smaller steps,
# CraFT's rate is its refinement MLP's (the paper's 1e-3).
METHODS = {
    "zero-shot": ("black", 3e-3),
    "craft": ("black", 1e-3),
    "output": ("gray", 3e-3),
    "dga": ("gray", 3e-3),
    "lga": ("gray+", 3e-3),
    "linear-probe": ("white", 3e-3),
    "lora": ("white", 1e-3),
    "last-layers": ("white", 1e-4),
    "full": ("white", 1e-4),
}
DEFAULT_METHODS = ("zero-shot", "craft", "dga", "lga", "lora", "full")
COLUMNS = ("domain", "method", "level", "accuracy", "trainable", "peak_mb", "seconds", "queries")


def run_one(
    domain: str,
    method: str,
    *,
    steps: int,
    queries: int,
    train_size: int,
    test_size: int,
    threads: int | None,
    output: Path,
) -> dict:
    """One central run (call it in a fresh process for a meaningful peak memory)."""
    level, lr = METHODS[method]
    config = load_config(
        CONFIG,
        [
            f"data.dataset={domain}",
            f"data.train_size={train_size}",
            f"data.test_size={test_size}",
            "train.task=classification",
            f"method.name={method}",
            f"backbone.level={level}",
            f"train.lr={lr}",
            f"train.steps={steps}",
            f"train.eval_every={steps}",
            f"method.craft.queries={queries}",
            f"method.craft.eval_every={queries}",
            f"train.threads={'null' if threads is None else threads}",
            f"output.root={output}",
            f"output.name={domain.replace('/', '-')}-{method}",
        ],
    )
    result = adapt(config, progress=False, echo=lambda _: None)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "domain": domain,
        "method": method,
        "level": level,
        "accuracy": round(result.adapted["accuracy"], 1),
        "trainable": result.trainable,
        "peak_mb": round(peak_kb / 1024),
        "seconds": round(result.seconds, 1),
        "queries": result.queries,
    }


def run(domains: list[str], methods: list[str], **options: object) -> list[dict]:
    """Every method on every domain, one fresh process per run; one row per run."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for domain in domains:
        for method in methods:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                row = pool.submit(run_one, domain, method, **options).result()
            print(" | ".join(str(row[c]) for c in COLUMNS), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), help="target domains")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=list(METHODS),
        help="methods to compare",
    )
    parser.add_argument("--steps", type=int, default=600, help="gradient steps per run")
    parser.add_argument("--queries", type=int, default=8000, help="CraFT's query budget")
    parser.add_argument("--train-size", type=int, default=320, help="training samples")
    parser.add_argument("--test-size", type=int, default=700, help="test samples")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument(
        "--output", type=Path, default=Path("runs/access"), help="folder for runs and tables"
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rows = run(
        args.domains,
        args.methods,
        steps=args.steps,
        queries=args.queries,
        train_size=args.train_size,
        test_size=args.test_size,
        threads=args.threads,
        output=args.output,
    )
    write_tables(rows, args.output, columns=COLUMNS)
    print(f"tables: {args.output / 'results.md'}")


if __name__ == "__main__":
    main()
