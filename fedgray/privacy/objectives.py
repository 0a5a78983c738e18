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

import torch
import torch.nn.functional as F

from fedgray.adapters import AdaptedCLIP
from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, encoders, similarity
from fedgray.tasks.objectives import TASKS, Batch, Task

TEXT_MODULES = ("text_in", "text_out", "text_prompts")


class FrozenTexts:
    """Text features of token tensors, encoded once each: the text side is frozen under DP,
    so negatives and class prompts keep their features for the task's whole lifetime."""

    def __init__(self) -> None:
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Features of ``tokens`` (computed on first use, without gradient)."""
        if id(tokens) not in self._features:  # the tokens are kept, so the id stays theirs
            with torch.no_grad():
                self._features[id(tokens)] = (tokens, encoders(model).encode_texts(tokens))
        return self._features[id(tokens)][1]


PrivateLoss = Callable[[torch.nn.Module, Batch, TaskData, float, FrozenTexts], torch.Tensor]


def _negatives(batch: Batch, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
    """Public negative tokens and, per sample, which of them describe it (masked out)."""
    _images, tokens, _caption_ids, labels = batch
    if data.public_tokens is not None:
        own = (tokens[:, None, :] == data.public_tokens[None, :, :]).all(dim=-1)
        return data.public_tokens, own
    return data.prompt_tokens, labels[:, None] == data.prompt_classes[None, :]


def _retrieval(
    model: torch.nn.Module, batch: Batch, data: TaskData, scale: float, texts: FrozenTexts
) -> torch.Tensor:
    images, tokens, _caption_ids, _labels = batch
    towers = encoders(model)
    image_features = F.normalize(towers.encode_images(images), dim=-1)
    caption_features = F.normalize(towers.encode_texts(tokens), dim=-1)
    negative_tokens, own = _negatives(batch, data)
    positive = scale * (image_features * caption_features).sum(-1, keepdim=True)
    negatives = similarity(image_features, texts(model, negative_tokens), scale)
    logits = torch.cat([positive, negatives.masked_fill(own, float("-inf"))], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def _classification(
    model: torch.nn.Module, batch: Batch, data: TaskData, scale: float, texts: FrozenTexts
) -> torch.Tensor:
    images, _tokens, _caption_ids, labels = batch
    logits = class_logits(
        encoders(model).encode_images(images),
        texts(model, data.prompt_tokens),
        data.prompt_classes,
        num_classes=data.num_classes,
        scale=scale,
    )
    return F.cross_entropy(logits, labels)


PRIVATE_OBJECTIVES: dict[str, PrivateLoss] = {
    "retrieval": _retrieval,
    "classification": _classification,
}


def private_task(name: str, model: AdaptedCLIP) -> Task:
    """Task ``name`` in its per-sample form; freezes the text-side modules of ``model``."""
    if name not in PRIVATE_OBJECTIVES:
        raise ValueError(
            f"train.task: '{name}' has no per-sample objective for DP "
            f"(known: {', '.join(PRIVATE_OBJECTIVES)})"
        )
    for module_name in TEXT_MODULES:
        module = getattr(model, module_name)
        if module is not None:
            module.requires_grad_(False)
    objective, texts = PRIVATE_OBJECTIVES[name], FrozenTexts()

    def loss(model: torch.nn.Module, batch: Batch, data: TaskData, scale: float) -> torch.Tensor:
        return objective(model, batch, data, scale, texts)

    return Task(name, TASKS[name].metric, loss)
