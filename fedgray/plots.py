"""PNG plots of a run's metrics (matplotlib, headless).

Matplotlib draws with the Agg backend and keeps its font cache in fedgray's cache folder
(``MPLCONFIGDIR``, unless already set), never in a folder of its own in the home directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from fedgray.paths import cache_dir

os.environ.setdefault("MPLCONFIGDIR", str(cache_dir() / "matplotlib"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


class _LineStyle(TypedDict):
    color: str
    linestyle: str


BASELINE_STYLES: tuple[_LineStyle, ...] = (
    {"color": "grey", "linestyle": "--"},
    {"color": "tab:green", "linestyle": ":"},
    {"color": "tab:purple", "linestyle": "-."},
)


def _finish(
    figure: Figure,
    axes: Axes,
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    baselines: Mapping[str, float],
) -> Path:
    for (label, value), style in zip(baselines.items(), BASELINE_STYLES, strict=False):
        axes.axhline(value, label=label, **style)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


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
    baselines = {} if baseline is None else {baseline_label: baseline}
    return _finish(
        figure, axes, path, xlabel=xlabel, ylabel=ylabel, title=title, baselines=baselines
    )


def plot_sweep(
    xs: Sequence[float],
    samples: Sequence[Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    baselines: Mapping[str, float],
) -> Path:
    """Each x's samples (seeds) as dots joined through their means, on a log-2 x axis, with
    horizontal baselines (at most two: grey dashed, green dotted), saved as PNG."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for x, values in zip(xs, samples, strict=True):
        axes.scatter([x] * len(values), values, color="tab:blue", alpha=0.35, s=14)
    means = [sum(values) / len(values) for values in samples]
    axes.plot(xs, means, marker="o", color="tab:blue", label="DP-SGD (mean over seeds)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(xs), [f"{x:g}" for x in xs])
    return _finish(
        figure, axes, path, xlabel=xlabel, ylabel=ylabel, title=title, baselines=baselines
    )


def plot_confusion(
    matrix: Sequence[Sequence[int]], names: Sequence[str], path: str | Path, *, title: str
) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with its counts, as PNG."""
    size = max(4.0, 0.45 * len(names) + 2.0)
    figure, axes = plt.subplots(figsize=(size, size), dpi=120)
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(names))
    axes.set_xticks(list(ticks), list(names), rotation=90)
    axes.set_yticks(list(ticks), list(names))
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=7)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
