"""``bench.json`` and the Markdown table: the figures with the conditions they were taken in.

The conditions (threads, the machine's load at start and end) travel with the figures
because on a shared machine they say how far the ratios can be trusted; absolute times
are left out on purpose, as they do not compare across runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .sections import Figure


def conditions(command: str) -> dict[str, Any]:
    """Where and how the figures were taken."""
    return {
        "command": command,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": os.getloadavg()[0],
    }


def _goal(figure: Figure) -> str:
    if figure.goal is None:
        return ""
    mark = "met" if figure.met else "not met"
    return f"<= {figure.goal:g}{figure.unit} ({mark})"


def markdown(figures: Sequence[Figure], info: dict[str, Any]) -> str:
    """The figures as one Markdown table per section, after a line of conditions."""
    lines = [
        f"`{info['command']}`: torch {info['torch']}, {info['threads']} threads on "
        f"{info['cpus']} CPUs, load average {info['load_average']:.1f} at start and "
        f"{info.get('load_average_end', float('nan')):.1f} at end; every figure is a ratio "
        "of modes timed interleaved in this run (median over rounds)."
    ]
    for section in dict.fromkeys(f.section for f in figures):
        lines += ["", f"**{section}**", "", "| figure | value | goal | note |", "|---|---|---|---|"]
        for f in (f for f in figures if f.section == section):
            value = {"%": f"{f.value:.3f}%", "x": f"{f.value:.2f}x"}.get(
                f.unit, f"{f.value:.2f} {f.unit}"
            )
            lines.append(f"| {f.name} | {value} | {_goal(f)} | {f.note} |")
    return "\n".join(lines) + "\n"


def write(out: Path, figures: Sequence[Figure], info: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out``; refuse non-finite figures."""
    bad = [f.name for f in figures if not (math.isfinite(f.value) and f.value > 0)]
    if bad:
        raise ValueError(f"bench: figures not finite and positive: {', '.join(bad)}")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "conditions": info,
        "figures": [{**asdict(f), "met": f.met} for f in figures],
    }
    json_path, md_path = out / "bench.json", out / "bench.md"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path.write_text(markdown(figures, info))
    return json_path, md_path
