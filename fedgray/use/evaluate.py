"""``fedgray evaluate``: the run's metrics on labelled data, a confusion matrix, per class.

The headline metrics are computed as the run's final evaluation computes them (for
adapters, the very function :func:`fedgray.tasks.metrics.evaluate` that the server's and
``fedgray adapt``'s final evaluation call; for CraFT, its own scoring: see
:mod:`fedgray.use.scorers`), so on the run's own test data they are the run's final
figures, bit for bit; the per-class figures come from the same class logits as
``fedgray predict``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedgray.data.sets import UNLABELLED
from fedgray.plots import plot_confusion
from fedgray.tasks import TaskData
from fedgray.use.scorers import Scorer


@dataclass(frozen=True)
class Evaluation:
    """Metrics (percent), and where labels exist the confusion matrix and per-class rows."""

    metrics: dict[str, float]
    confusion: list[list[int]]
    per_class: list[dict[str, Any]]


def per_class_rows(confusion: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """Support, recall (the class's accuracy) and precision of each class, percent."""
    rows = []
    for c, name in enumerate(names):
        support, predicted = int(confusion[c].sum()), int(confusion[:, c].sum())
        hits = int(confusion[c, c])
        rows.append(
            {
                "class": name,
                "support": support,
                "recall": 100.0 * hits / support if support else None,
                "precision": 100.0 * hits / predicted if predicted else None,
            }
        )
    return rows


def evaluate_model(
    scorer: Scorer, data: TaskData, prompts: list[list[str]], names: list[str]
) -> Evaluation:
    """Metrics of ``scorer`` on ``data``; with labels, the confusion over ``names``."""
    metrics = scorer.metrics(data)
    labelled = data.labels != UNLABELLED
    if not bool(labelled.any()):
        metrics.pop("accuracy")  # no label to be accurate about
        return Evaluation(metrics, [], [])
    logits = scorer.class_scores(scorer.image_features(data.images), prompts)
    predicted, labels = logits.argmax(1)[labelled].cpu(), data.labels[labelled].cpu()
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return Evaluation(metrics, confusion.tolist(), per_class_rows(confusion, names))


def write_evaluation(out: Path, result: Evaluation, names: list[str], *, title: str) -> list[Path]:
    """``per_class.csv`` and ``confusion.png`` where there are labels; the files written."""
    if not result.per_class:
        return []
    table = out / "per_class.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["class", "support", "recall", "precision"])
        writer.writeheader()
        writer.writerows(result.per_class)
    return [table, plot_confusion(result.confusion, names, out / "confusion.png", title=title)]
