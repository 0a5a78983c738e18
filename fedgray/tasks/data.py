"""Tensors a task needs, built once per dataset: images, tokens, caption ids, class prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from fedgray.data.sets import ImageTextSet


@dataclass(frozen=True)
class TaskData:
    """A dataset in the backbone's input format.

    ``images`` stay at the dataset's own resolution: the model fits each batch to the
    backbone's input size (:func:`fit_pixels`), so a pool for a 224 px backbone holds
    its 32 px sketches at 32 px, not 49 times larger.
    ``caption_ids`` number the distinct captions (equal captions, equal ids), so that
    retrieval counts any image with the right caption as a hit and the contrastive loss
    does not push apart identical captions. ``prompt_tokens``/``prompt_classes`` are the
    class prompts for classification. ``public_tokens`` are the dataset's public captions
    (see :class:`~fedgray.data.sets.ImageTextSet`), None where it has none.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    caption_ids: torch.Tensor
    labels: torch.Tensor
    prompt_tokens: torch.Tensor
    prompt_classes: torch.Tensor
    num_classes: int
    public_tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def as_dataset(self) -> TensorDataset:
        """Per-sample tensors for a DataLoader: (images, tokens, caption_ids, labels)."""
        return TensorDataset(self.images, self.tokens, self.caption_ids, self.labels)

    def to(self, device: torch.device) -> TaskData:
        """The same data on ``device`` (itself when already there)."""
        if self.images.device == device:
            return self
        moved: dict[str, Any] = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> TaskData:
        """The samples at ``indices``, caption ids renumbered ``0..U-1`` (prompts unchanged)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        _, caption_ids = torch.unique(self.caption_ids[index], return_inverse=True)
        return TaskData(
            self.images[index],
            self.tokens[index],
            caption_ids,
            self.labels[index],
            self.prompt_tokens,
            self.prompt_classes,
            self.num_classes,
            self.public_tokens,
        )


def fit_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``pixels`` [B, 3, H, W] resized to ``size`` x ``size`` (bicubic, kept in [0, 1]);
    themselves when already that size. Per image, so a batch fits as the whole set would."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bicubic").clamp(0.0, 1.0)


def prepare(dataset: ImageTextSet, tokenize: Callable[[Sequence[str]], torch.Tensor]) -> TaskData:
    """Tokenize captions and class prompts; images keep their resolution (see TaskData).

    Each distinct caption is tokenized once: the owner's 40,000 captions are a few thousand
    distinct ones, and a caption's tokens do not depend on the others."""
    distinct = {caption: i for i, caption in enumerate(dict.fromkeys(dataset.captions))}
    caption_ids = torch.tensor([distinct[c] for c in dataset.captions], dtype=torch.long)
    prompts = [(p, c) for c, group in enumerate(dataset.class_prompts) for p in group]
    return TaskData(
        images=dataset.images.contiguous(),
        tokens=tokenize(list(distinct))[caption_ids],
        caption_ids=caption_ids,
        labels=dataset.labels.long(),
        prompt_tokens=tokenize([p for p, _ in prompts]),
        prompt_classes=torch.tensor([c for _, c in prompts]),
        num_classes=len(dataset.class_prompts),
        public_tokens=tokenize(dataset.public_captions) if dataset.public_captions else None,
    )
