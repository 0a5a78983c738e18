"""The experiment drivers' one output: a Markdown table written to ``results.md`` and printed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_results(output: str | Path, rows: Sequence[str]) -> Path:
    """Write ``rows`` (a Markdown table's lines) to ``OUTPUT/results.md`` and print them."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.md"
    path.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return path
