"""Training objectives: symmetric InfoNCE for image-text pairs, cross-entropy over prompts."""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F


class Encoders(Protocol):
    """The two towers of an ``AdaptedCLIP``, as the objectives and metrics call them."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor: ...


def encoders(model: torch.nn.Module) -> Encoders:
    """``model`` seen through its towers: an ``AdaptedCLIP``, or a module that forwards its
    attributes to one (Opacus' ``GradSampleModule``), which the type of ``model`` cannot say."""
    return cast(Encoders, model)


def similarity(a: torch.Tensor, b: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities [len(a), len(b)]; ``scale`` may be a learnt logit scale."""
    return scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    scale: float | torch.Tensor,
    caption_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE; other pairs with the same caption are not counted as negatives."""
    logits = similarity(image_features, text_features, scale)
    if caption_ids is not None:
        same = caption_ids[:, None] == caption_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def class_logits(
    image_features: torch.Tensor,
    prompt_features: torch.Tensor,
    prompt_classes: torch.Tensor,
    *,
    num_classes: int,
    scale: float,
) -> torch.Tensor:
    """Per-class logits [B, classes]: logsumexp over each class's prompt logits."""
    logits = similarity(image_features, prompt_features, scale)
    member = F.one_hot(prompt_classes, num_classes).T.bool()
    masked = logits[:, None, :].masked_fill(~member[None], float("-inf"))
    return torch.logsumexp(masked, dim=-1)
