"""Single-site comparison: zero-shot, DGA (gray), LGA (gray+), full fine-tuning (white).

Runs ``fedgray adapt`` for every (domain, method) pair on the built-in benchmark and
writes ``results.csv`` and ``results.md`` into the output folder::

    python -m simulations.compare_methods --output runs/compare
    python -m simulations.compare_methods --domains sketch --steps 300 --output /tmp/cmp
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fedgray.adapt import adapt
from fedgray.resolver import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "adapt_sketch.yaml"
# method -> (access level, learning rate); full fine-tuning needs a far smaller step.
METHODS = {
    "zero-shot": ("gray", 3e-3),
    "dga": ("gray", 3e-3),
    "lga": ("gray+", 3e-3),
    "full": ("white", 1e-4),
}
COLUMNS = ("domain", "method", "level", "trainable", "i2t_r1", "t2i_r1", "accuracy", "seconds")


def run(domains: list[str], methods: list[str], *, steps: int, output: Path) -> list[dict]:
    """Adapt every method on every domain; return one row per run."""
    rows = []
    for domain in domains:
        for method in methods:
            level, lr = METHODS[method]
            config = load_config(
                CONFIG,
                [
                    f"data.dataset=world/{domain}",
                    f"method.name={method}",
                    f"backbone.level={level}",
                    f"train.lr={lr}",
                    f"train.steps={steps}",
                    f"train.eval_every={steps}",
                    f"output.root={output}",
                    f"output.name={domain}-{method}",
                ],
            )
            result = adapt(config, progress=False, echo=lambda _: None)
            row = {
                "domain": domain,
                "method": method,
                "level": level,
                "trainable": result.trainable,
                "seconds": round(result.seconds, 1),
            }
            row.update({k: round(result.adapted[k], 1) for k in ("i2t_r1", "t2i_r1", "accuracy")})
            print(" | ".join(str(row[c]) for c in COLUMNS), flush=True)
            rows.append(row)
    return rows


def write_tables(rows: list[dict], output: Path, *, columns: tuple[str, ...] = COLUMNS) -> None:
    """Write ``results.csv`` and a Markdown table ``results.md`` of ``columns``."""
    with (output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    (output / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--domains",
        nargs="+",
        default=["sketch", "inverted", "noisy"],
        help="target domains of the built-in world",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="methods to compare",
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps per run")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/compare"),
        help="folder for the runs and the tables",
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    write_tables(run(args.domains, args.methods, steps=args.steps, output=args.output), args.output)
    print(f"tables: {args.output / 'results.md'}")


if __name__ == "__main__":
    main()
