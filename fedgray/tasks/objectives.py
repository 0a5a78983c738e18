"""Training objectives by task name, each with the metric that summarises it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, contrastive_loss, encoders

Batch = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Task:
    """A loss over (images, tokens, caption_ids, labels) batches and its headline metric."""

    name: str
    metric: str
    loss: Callable[[torch.nn.Module, Batch, TaskData, float], torch.Tensor]


def _retrieval(model: torch.nn.Module, batch: Batch, _: TaskData, scale: float) -> torch.Tensor:
    images, tokens, caption_ids, _labels = batch
    image_features, text_features = model(images, tokens)
    return contrastive_loss(image_features, text_features, scale=scale, caption_ids=caption_ids)


def _classification(
    model: torch.nn.Module, batch: Batch, data: TaskData, scale: float
) -> torch.Tensor:
    images, _tokens, _caption_ids, labels = batch
    towers = encoders(model)
    logits = class_logits(
        towers.encode_images(images),
        towers.encode_texts(data.prompt_tokens),
        data.prompt_classes,
        num_classes=data.num_classes,
        scale=scale,
    )
    return torch.nn.functional.cross_entropy(logits, labels)


TASKS: dict[str, Task] = {
    "retrieval": Task("retrieval", "r1_mean", _retrieval),
    "classification": Task("classification", "accuracy", _classification),
}
