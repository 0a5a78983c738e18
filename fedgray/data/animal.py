"""Animal-MNIST (MIT): 10,000 28x28 animal silhouettes, 1,000 in each of 10 named classes,
shipped as pickled numpy arrays in the ``animal-mnist`` wheel.

The two pickles are read by :mod:`fedgray.data.safe_pickle`, never through the package's
own loader (it imports tensorflow), from ``data.root`` or the installed package's folder,
found without importing it. The set has no official split: a seeded stratified 20% is the
test split, 10% of the rest the validation split.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedgray.data.safe_pickle import load_array
from fedgray.data.scans import SCAN_SIDE, named_class_set
from fedgray.data.sets import ImageTextSet
from fedgray.data.splits import three_way_split

PACKAGE = "animal_mnist"
PACKAGE_DIR = ("data", "Animal_MNIST")
IMAGES, LABELS = "animal_data_version_3.gz", "animal_label_version_3.gz"
PIN = "animal-mnist==0.4"
# Label order: the package's description lists the classes alphabetically and the labels
# follow it (class 6's silhouettes are long-necked giraffes).
NOUNS = {
    name: f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    for name in (
        "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"
    )
}  # fmt: skip
TEMPLATES = (
    "a silhouette of {}",
    "a black and white picture of {}",
    "a photo of {}",
    "a drawing of {}",
)
TEST_FRACTION = 0.2


def animal_dir(root: str | Path | None) -> Path:
    """The folder holding the two pickles: ``root`` when given, else the installed
    package's; a one-line error saying how to get them when absent."""
    if root is not None:
        candidates = [Path(root)]
    else:
        spec = importlib.util.find_spec(PACKAGE)  # locates the package, runs none of its code
        found = list(spec.submodule_search_locations or []) if spec is not None else []
        candidates = [Path(location).joinpath(*PACKAGE_DIR) for location in found]
    for folder in candidates:
        if (folder / IMAGES).is_file() and (folder / LABELS).is_file():
            return folder
    where = str(candidates[0]) if candidates else "the animal-mnist package"
    raise FileNotFoundError(
        f"data.dataset: 'animal-mnist' needs {IMAGES} and {LABELS} in {where}: "
        f"pip install --no-deps {PIN} (its declared requirements pull tensorflow, which "
        "fedgray never imports), or copy the two files into data.root"
    )


@lru_cache(maxsize=1)
def _pool(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """All silhouettes (uint8 [N, 28, 28]) and labels (int64 [N])."""
    pixels = load_array(folder / IMAGES)
    labels = load_array(folder / LABELS).astype(np.int64)
    if pixels.dtype != np.uint8 or pixels.shape != (len(labels), SCAN_SIDE, SCAN_SIDE):
        raise ValueError(f"{folder}: {pixels.dtype} {pixels.shape} images do not match "
                         f"{labels.shape} labels")  # fmt: skip
    if labels.size and not 0 <= labels.min() <= labels.max() < len(NOUNS):
        raise ValueError(f"{folder / LABELS}: labels outside 0..{len(NOUNS) - 1}")
    return pixels, labels


def animal_indices(
    *, split: str, seed: int, root: str | Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool (images, labels) and the indices of ``split`` in it."""
    pixels, labels = _pool(animal_dir(root))
    return pixels, labels, three_way_split(labels, test_fraction=TEST_FRACTION, seed=seed)[split]


def load_animal_set(
    *,
    split: str,
    seed: int,
    size: int | None = None,
    root: str | Path | None = None,
    image_size: int = 32,
) -> ImageTextSet:
    """The first ``size`` samples (all when None) of ``split`` ("train": 7,200,
    "validation": 800, "test": 2,000), captioned from class-name templates."""
    pixels, labels, chosen = animal_indices(split=split, seed=seed, root=root)
    return named_class_set(
        pixels,
        labels,
        chosen[:size],
        nouns=NOUNS,
        templates=TEMPLATES,
        name="animal-mnist",
        image_size=image_size,
    )
