"""``fedgray evaluate``: the run's metrics on labelled data, a confusion matrix, per class.

The headline metrics come from the very function a run evaluates with
(:func:`fedgray.tasks.metrics.evaluate`, which the server's and ``fedgray adapt``'s final
evaluation call), so on the run's own test data they are the run's final figures, bit for
bit; the per-class figures come from the same class logits as ``fedgray predict``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedgray.adapters import AdaptedCLIP
from fedgray.backbone import Backbone
from fedgray.data.sets import UNLABELLED
from fedgray.plots import plot_confusion
from fedgray.tasks import TaskData, evaluate
from fedgray.use.predict import class_scores, image_features


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
    model: AdaptedCLIP,
    backbone: Backbone,
    data: TaskData,
    prompts: list[list[str]],
    names: list[str],
) -> Evaluation:
    """Metrics of ``model`` on ``data``; with labels, the confusion over ``names``."""
    metrics = evaluate(model, data)
    labelled = data.labels != UNLABELLED
    if not bool(labelled.any()):
        metrics.pop("accuracy")  # no label to be accurate about
        return Evaluation(metrics, [], [])
    logits = class_scores(model, backbone, image_features(model, data.images), prompts)
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
