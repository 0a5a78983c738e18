"""CraFT's training augmentation, in torch alone: random resized crop and horizontal flip.

The authors' code trains the refinement MLP each step on a fresh epoch of augmented
training images (torchvision's ``RandomResizedCrop(scale=(0.5, 1))`` and
``RandomHorizontalFlip(0.5)``). Here images are already in the backbone's format
(normalised tensors), so the crop is taken and resized back with bilinear interpolation;
every draw comes from the caller's generator, so a run repeats exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALE = (0.5, 1.0)  # the crop's share of the image area (the authors' setting)
RATIO = (3 / 4, 4 / 3)  # the crop's aspect ratio (torchvision's default)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) as torchvision draws them (10 tries, then all)."""
    area = height * width
    for _ in range(10):
        target = area * _uniform(*SCALE, generator)
        ratio = math.exp(_uniform(math.log(RATIO[0]), math.log(RATIO[1]), generator))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    return 0, 0, height, width


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image [N, C, H, W] cropped at random, resized back to H x W and flipped with
    probability 0.5."""
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    flips = torch.rand(images.shape[0], generator=generator) < 0.5
    for i, image in enumerate(images):
        top, left, h, w = _crop_box(height, width, generator)
        crop = image[None, :, top : top + h, left : left + w]
        resized = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        out[i] = resized[0].flip(-1) if flips[i] else resized[0]
    return out
