"""Real handwritten digits: scikit-learn's bundled 8x8 scans (1,797 images, no download)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fedgray.data.sets import SPLITS, ImageTextSet
from fedgray.data.splits import three_way_split
from fedgray.data.world import CLASS_NAMES, DIGITS, class_prompts

_DIGIT_FRACTION = 20 / 32  # the scan's side after upsampling, relative to the padded image


def _to_image(scan: np.ndarray, image_size: int) -> np.ndarray:
    """An 8x8 scan (ink 0..16) as dark ink on white paper, upsampled and padded, uint8 HxW."""
    side = round(image_size * _DIGIT_FRACTION)
    ink = Image.fromarray(np.uint8(scan * (255.0 / 16.0)))
    ink = ink.resize((side, side), Image.Resampling.BILINEAR)
    paper = np.zeros((image_size, image_size), dtype=np.uint8)
    top = (image_size - side) // 2
    paper[top : top + side, top : top + side] = np.asarray(ink)
    return 255 - paper


def load_digits_set(
    *, split: str, seed: int, test_fraction: float = 0.45, image_size: int = 32
) -> ImageTextSet:
    """The ``split`` ("train", "validation" or "test") of a deterministic stratified split
    of the scans: ``test_fraction`` of every class to test, a tenth of the rest to validation.

    Images are grey ink on white in 3 channels, captions read "the digit 7", and the class
    prompts are the world's digit prompts with their colour variants (their logsumexp
    includes the plain "the digit 7"; the pilot found colour-naming prompts transfer better).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    from sklearn.datasets import load_digits  # 1 s of imports every process would pay

    bunch = load_digits()
    target = np.asarray(bunch.target, dtype=np.int64)
    chosen = three_way_split(target, test_fraction=test_fraction, seed=seed)[split]
    grey = np.stack([_to_image(bunch.images[i], image_size) for i in chosen])
    images = torch.from_numpy(grey).float().div_(255.0)[:, None].expand(-1, 3, -1, -1)
    first_digit = CLASS_NAMES.index("digit 0")
    return ImageTextSet(
        images=images.contiguous(),
        captions=[f"the digit {target[i]}" for i in chosen],
        labels=torch.from_numpy(target[chosen]),
        class_names=[f"digit {d}" for d in DIGITS],
        class_prompts=class_prompts(domain="photo")[first_digit:],
        name="digits",
    )
