"""Load any fedgray dataset by name: ``world/<domain>``, ``digits``, ``mnist`` or
``folder:<path>``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgray.data.digits import load_digits_set
from fedgray.data.folder import load_folder_set, read_captions
from fedgray.data.mnist import load_mnist_set
from fedgray.data.sets import SPLITS, ImageTextSet
from fedgray.data.world import DOMAINS
from fedgray.data.world_set import make_world_set

FOLDER_PREFIX = "folder:"
DATASETS = (*(f"world/{d}" for d in DOMAINS), "digits", "mnist", f"{FOLDER_PREFIX}<path>")
WORLD_OFFSETS = {"train": 0, "test": 10_000_000}  # disjoint scene index ranges per split
WORLD_DEFAULT_SIZES = {"train": 10_000, "test": 1_000}

Loader = Callable[..., ImageTextSet]


def _world(domain: str) -> Loader:
    def load(*, split: str, size: int | None, seed: int, **options: Any) -> ImageTextSet:
        n = WORLD_DEFAULT_SIZES[split] if size is None else size
        return make_world_set(n, seed=seed, domain=domain, offset=WORLD_OFFSETS[split], **options)

    return load


def _digits(*, split: str, size: int | None, seed: int, **options: Any) -> ImageTextSet:
    return _head(load_digits_set(split=split, seed=seed, **options), size)


def _mnist(*, split: str, size: int | None, seed: int, **options: Any) -> ImageTextSet:
    return _head(load_mnist_set(split=split, seed=seed, **options), size)


def _folder(path: str) -> Loader:
    def load(*, split: str, size: int | None, seed: int, **options: Any) -> ImageTextSet:
        return _head(load_folder_set(Path(path) / split, **options), size)

    return load


def _head(dataset: ImageTextSet, size: int | None) -> ImageTextSet:
    if size is None:
        return dataset
    if size > len(dataset):
        raise ValueError(f"{dataset.name} has {len(dataset)} samples, {size} requested")
    return dataset.subset(range(size))


_LOADERS: dict[str, Loader] = {f"world/{d}": _world(d) for d in DOMAINS} | {
    "digits": _digits,
    "mnist": _mnist,
}


def available(name: str, *, split: str) -> int | None:
    """How many samples ``split`` of dataset ``name`` holds (None: rendered on demand, any
    number), without loading its images: what a run can check before it starts."""
    if name.startswith(FOLDER_PREFIX):
        return len(read_captions(Path(name.removeprefix(FOLDER_PREFIX)) / split)[2])
    if name == "digits":
        return len(load_digits_set(split=split, seed=0))
    if name == "mnist":
        return len(load_mnist_set(split=split, seed=0))
    if name in _LOADERS:
        return None
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def load_dataset(
    name: str, *, split: str, size: int | None = None, seed: int = 0, **options: Any
) -> ImageTextSet:
    """Load ``split`` ("train" or "test") of dataset ``name`` (see :data:`DATASETS`).

    ``size`` keeps the first samples (world: renders that many; default 10,000 train /
    1,000 test). World splits are disjoint scene ranges; ``digits`` and ``mnist`` are
    seeded stratified splits; ``folder:<path>`` reads ``<path>/<split>/captions.csv``.
    ``options`` go to the underlying loader (e.g. ``caption_style``, ``noise_sigma``,
    ``image_size``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if name.startswith(FOLDER_PREFIX):
        loader = _folder(name.removeprefix(FOLDER_PREFIX))
    elif name in _LOADERS:
        loader = _LOADERS[name]
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return loader(split=split, size=size, seed=seed, **options)


def check_images(name: str, *, split: str) -> None:
    """Decode every image of ``split`` of a folder dataset (the shipped ones are known to
    load), so that a truncated or unreadable file is one line before a run starts rather
    than a site failing in its first round."""
    if name.startswith(FOLDER_PREFIX):
        load_dataset(name, split=split)


def untrained_classes(name: str) -> list[str]:
    """Classes of dataset ``name`` with test examples but no training examples, from the
    folder's ``label`` column (the shipped datasets have every class in both splits): no
    training can teach them, and a folder's class indices are per split."""
    if not name.startswith(FOLDER_PREFIX):
        return []
    root = Path(name.removeprefix(FOLDER_PREFIX))
    labels = {}
    for split in ("train", "test"):
        _, columns, rows = read_captions(root / split)
        if "label" not in columns:
            return []
        labels[split] = {(row.get("label") or "").strip() for row in rows}
    return sorted(labels["test"] - labels["train"])
