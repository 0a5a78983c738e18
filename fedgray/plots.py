"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curve(
    xs: Sequence[float],
    ys: Sequence[float],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    baseline: float | None = None,
    baseline_label: str = "zero-shot",
) -> Path:
    """A learning curve with an optional horizontal baseline, saved as PNG."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    axes.plot(xs, ys, marker="o", label="adapted")
    if baseline is not None:
        axes.axhline(baseline, color="grey", linestyle="--", label=baseline_label)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
