"""Per-sample objectives for DP-SGD.

DP-SGD clips each sample's gradient, which bounds one sample's influence only when every
sample's loss depends on that sample alone (plus public data). The non-private objectives
do not: in-batch InfoNCE uses the other samples as negatives, and classification encodes
the class prompts once for the whole batch. Under DP each task therefore has a
per-sample form:

- ``retrieval``: each image against its own caption (positive) and public negatives,
  encoded without gradient: the dataset's public caption vocabulary where it has one
  (every other caption its generator can produce), else the class prompts of the other
  classes. The text-side modules are frozen: gradients through the negatives would not
  be per-sample, and training the caption side on the positive alone pulls every caption
  towards every image (measured on the quickstart without noise: R@1 40.1 with the text
  side trained, 47.3 frozen);
- ``classification``: each image against the class prompts, encoded without gradient; the
  text-side modules are frozen (they keep the global values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedgray.adapters import AdaptedCLIP
from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, similarity
from fedgray.tasks.objectives import TASKS, Batch, Task

TEXT_MODULES = ("text_in", "text_out", "text_prompts")


def _negatives(batch: Batch, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
    """Public negative tokens and, per sample, which of them describe it (masked out)."""
    _images, tokens, _caption_ids, labels = batch
    if data.public_tokens is not None:
        own = (tokens[:, None, :] == data.public_tokens[None, :, :]).all(dim=-1)
        return data.public_tokens, own
    return data.prompt_tokens, labels[:, None] == data.prompt_classes[None, :]


def _retrieval(model: torch.nn.Module, batch: Batch, data: TaskData, scale: float) -> torch.Tensor:
    images, tokens, _caption_ids, _labels = batch
    image_features = F.normalize(model.encode_images(images), dim=-1)
    caption_features = F.normalize(model.encode_texts(tokens), dim=-1)
    negative_tokens, own = _negatives(batch, data)
    with torch.no_grad():
        negatives = model.encode_texts(negative_tokens)
    positive = scale * (image_features * caption_features).sum(-1, keepdim=True)
    negative = similarity(image_features, negatives, scale).masked_fill(own, float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def _classification(
    model: torch.nn.Module, batch: Batch, data: TaskData, scale: float
) -> torch.Tensor:
    images, _tokens, _caption_ids, labels = batch
    with torch.no_grad():
        prompts = model.encode_texts(data.prompt_tokens)
    logits = class_logits(
        model.encode_images(images),
        prompts,
        data.prompt_classes,
        num_classes=data.num_classes,
        scale=scale,
    )
    return F.cross_entropy(logits, labels)


@dataclass(frozen=True)
class PrivateObjective:
    """A per-sample (mean-reduced) loss and the modules that stay frozen under it."""

    loss: Callable[[torch.nn.Module, Batch, TaskData, float], torch.Tensor]
    frozen: tuple[str, ...] = ()


PRIVATE_OBJECTIVES: dict[str, PrivateObjective] = {
    "retrieval": PrivateObjective(_retrieval, frozen=TEXT_MODULES),
    "classification": PrivateObjective(_classification, frozen=TEXT_MODULES),
}


def private_task(name: str, model: AdaptedCLIP) -> Task:
    """Task ``name`` in its per-sample form; freezes the modules it does not train."""
    if name not in PRIVATE_OBJECTIVES:
        raise ValueError(
            f"train.task: '{name}' has no per-sample objective for DP "
            f"(known: {', '.join(PRIVATE_OBJECTIVES)})"
        )
    objective = PRIVATE_OBJECTIVES[name]
    for module_name in objective.frozen:
        module = getattr(model, module_name)
        if module is not None:
            module.requires_grad_(False)
    return Task(name, TASKS[name].metric, objective.loss)
