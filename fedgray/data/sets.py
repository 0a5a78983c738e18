"""The in-memory image-text dataset that every fedgray loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

SPLITS = ("train", "validation", "test")  # the splits every named dataset offers
UNLABELLED = -1  # label of a sample that belongs to no class (e.g. a folder without labels)


@dataclass(eq=False)
class ImageTextSet:
    """Images with one caption and one class label each, plus the class prompts.

    ``images`` is float32 ``[N, 3, H, W]`` in ``[0, 1]``; ``labels`` is long ``[N]`` with
    values in ``[0, len(class_names))`` or :data:`UNLABELLED`; ``class_prompts[c]`` lists the
    prompt strings of class ``c`` (lists may differ in length). ``public_captions`` is
    the dataset's public caption vocabulary where it has one (every caption its generator can
    produce, independent of the samples; empty otherwise).
    """

    images: torch.Tensor
    captions: list[str]
    labels: torch.Tensor
    class_names: list[str]
    class_prompts: list[list[str]]
    name: str
    public_captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.captions)
        if self.images.dtype != torch.float32 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be float32 [N, 3, H, W]")
        if self.images.shape[1] != 3:
            raise ValueError(f"{self.name}: images need 3 channels, got {self.images.shape[1]}")
        if self.images.shape[0] != n or self.labels.shape != (n,):
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images, {n} captions and "
                f"{tuple(self.labels.shape)} labels do not match"
            )
        if not torch.isfinite(self.images).all():
            raise ValueError(f"{self.name}: images contain NaN or infinite values")
        if self.labels.dtype != torch.long:
            raise ValueError(f"{self.name}: labels must be torch.long, got {self.labels.dtype}")
        low, high = UNLABELLED, len(self.class_names)
        if n and not (low <= self.labels.min() and self.labels.max() < high):
            raise ValueError(f"{self.name}: labels must lie in [0, {high}) or be {UNLABELLED}")
        if len(self.class_prompts) != len(self.class_names) or not all(self.class_prompts):
            raise ValueError(f"{self.name}: need a non-empty prompt list for every class")

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageTextSet:
        """The samples at ``indices`` (in that order), with the same classes and prompts."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageTextSet(
            images=self.images[index],
            captions=[self.captions[i] for i in index.tolist()],
            labels=self.labels[index],
            class_names=list(self.class_names),
            class_prompts=[list(p) for p in self.class_prompts],
            name=self.name,
            public_captions=list(self.public_captions),
        )
