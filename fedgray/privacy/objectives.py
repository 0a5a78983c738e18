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
- ``retrieval`` with ``privacy.objective: text-out``: the same positive and public
  negatives, but the text output module trains too. Its inputs (the text backbone's
  features of the sample's own caption and of the public pool) are computed without
  gradient, and the module is applied to a per-sample bank [B, 1 + N, D]: the caption and
  a copy of the pool for each sample, so Opacus attributes every gradient through the
  negatives to the sample whose loss it is (the negatives are public; the loss of sample
  ``i`` depends on sample ``i``, the public pool and the parameters only). Each sample's
  loss thus moves the text side's map of the whole pool, not only its own caption, which
  is what training the caption side on the positive alone lacked;
- ``classification``: each image against the class prompts, encoded without gradient; the
  text-side modules are frozen (they keep the global values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import torch
import torch.nn.functional as F

from fedgray.adapters import AdaptedCLIP
from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, encoders, similarity
from fedgray.tasks.objectives import TASKS, Batch, Task

TEXT_MODULES: tuple[str, ...] = ("text_in", "text_out", "text_prompts")


class TextOutTowers(Protocol):
    """What ``text-out`` calls: an ``AdaptedCLIP`` or its cached head."""

    text_out: torch.nn.Module | None

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def bare_texts(self, tokens: torch.Tensor) -> torch.Tensor: ...


class FrozenTexts:
    """Text features of token tensors, encoded once each: the text side is frozen under DP
    (all of it, or all but its output module), so negatives and class prompts keep their
    features for the task's whole lifetime."""

    def __init__(self) -> None:
        self._features: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self, model: torch.nn.Module, tokens: torch.Tensor, *, bare: bool = False
    ) -> torch.Tensor:
        """Features of ``tokens`` (computed on first use, without gradient); ``bare``: before
        the text output module."""
        key = (id(tokens), bare)  # the tokens are kept, so the id stays theirs
        if key not in self._features:
            with torch.no_grad():
                towers = cast(TextOutTowers, model)
                encode = towers.bare_texts if bare else encoders(model).encode_texts
                self._features[key] = (tokens, encode(tokens))
        return self._features[key][1]


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


def _retrieval_text_out(
    model: torch.nn.Module, batch: Batch, data: TaskData, scale: float, texts: FrozenTexts
) -> torch.Tensor:
    images, tokens, _caption_ids, _labels = batch
    towers = cast(TextOutTowers, model)
    image_features = F.normalize(towers.encode_images(images), dim=-1)
    negative_tokens, own = _negatives(batch, data)
    with torch.no_grad():  # nothing before the text output module trains
        captions = towers.bare_texts(tokens)
    pool = texts(model, negative_tokens, bare=True)
    bank = torch.cat([captions[:, None, :], pool[None].expand(len(captions), -1, -1)], dim=1)
    text_out = towers.text_out
    text_features = F.normalize(text_out(bank) if text_out is not None else bank, dim=-1)
    logits = scale * torch.einsum("bd,bkd->bk", image_features, text_features)
    mask = torch.cat([torch.zeros_like(own[:, :1]), own], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.masked_fill(mask, float("-inf")), target)


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
OBJECTIVES: dict[str, dict[str, PrivateLoss]] = {  # privacy.objective -> task -> loss
    "frozen-text": PRIVATE_OBJECTIVES,
    "text-out": {"retrieval": _retrieval_text_out},
}


def private_task(
    name: str, model: AdaptedCLIP, objective: str = "frozen-text", scale: float | None = None
) -> Task:
    """Task ``name`` in its per-sample form ``objective``; freezes the text-side modules of
    ``model`` (all but the text output module under ``text-out``). ``scale``: the logit
    scale of the loss (default: the backbone's)."""
    if name not in PRIVATE_OBJECTIVES:
        raise ValueError(
            f"train.task: '{name}' has no per-sample objective for DP "
            f"(known: {', '.join(PRIVATE_OBJECTIVES)})"
        )
    if objective not in OBJECTIVES:
        raise ValueError(f"privacy.objective: '{objective}' (known: {', '.join(OBJECTIVES)})")
    losses = OBJECTIVES[objective]
    if name not in losses:
        raise ValueError(
            f"privacy.objective: '{objective}' has no form for train.task '{name}' "
            f"(known: {', '.join(losses)})"
        )
    frozen = TEXT_MODULES
    if objective == "text-out":
        if not isinstance(model.text_out, torch.nn.Linear):
            raise ValueError(
                "privacy.objective: 'text-out' needs a linear text output module "
                "(method 'output', 'dga' or 'lga')"
            )
        frozen = tuple(m for m in TEXT_MODULES if m != "text_out")
    objective_loss = losses[name]
    for module_name in frozen:
        module = getattr(model, module_name)
        if module is not None:
            module.requires_grad_(False)
    texts = FrozenTexts()

    def loss(model: torch.nn.Module, batch: Batch, data: TaskData, logit: float) -> torch.Tensor:
        return objective_loss(model, batch, data, logit if scale is None else scale, texts)

    return Task(name, TASKS[name].metric, loss)
