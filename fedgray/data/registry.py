"""Load any fedgray dataset by name: a row of :data:`DATASET_ROWS`, or ``folder:<path>``
(:data:`DATASETS` lists them).

Every dataset offers three splits (:data:`~fedgray.data.sets.SPLITS`): ``train``,
``validation`` (drawn from the training pool, never from test) and ``test``, each
deterministic by seed and disjoint from the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgray.data.animal import animal_indices, load_animal_set
from fedgray.data.digits import load_digits_set
from fedgray.data.fashion import fashion_indices, load_fashion_set
from fedgray.data.folder import load_folder_set, read_captions
from fedgray.data.mnist import load_mnist_set
from fedgray.data.sets import SPLITS, ImageTextSet
from fedgray.data.world import DOMAINS
from fedgray.data.world_set import make_world_set

FOLDER_PREFIX = "folder:"
# disjoint scene index ranges per split: validation is another range of the same generator
WORLD_OFFSETS = {"train": 0, "validation": 5_000_000, "test": 10_000_000}
WORLD_DEFAULT_SIZES = {"train": 10_000, "validation": 1_000, "test": 1_000}

Loader = Callable[..., ImageTextSet]
Counter = Callable[..., int | None]  # (split=, seed=, root=) -> samples, None: any number


@dataclass(frozen=True)
class Dataset:
    """A named dataset's row: how to load a split, and how to count it without loading
    images (what a run checks before it starts). Each kind of dataset has its row maker
    (:func:`rendered`, :func:`whole`, :func:`indexed`, :func:`_folder`), so adding a
    dataset is its module plus one row of :data:`DATASET_ROWS`."""

    load: Loader  # (split=, size=, seed=, root=, **options) -> ImageTextSet
    count: Counter


def rendered(domain: str) -> Dataset:
    """A built-in world domain, rendered on demand: any number of samples, disjoint scene
    ranges per split."""

    def load(
        *, split: str, size: int | None, seed: int, root: str | None, **options: Any
    ) -> ImageTextSet:
        n = WORLD_DEFAULT_SIZES[split] if size is None else size
        return make_world_set(n, seed=seed, domain=domain, offset=WORLD_OFFSETS[split], **options)

    return Dataset(load=load, count=lambda **_: None)


def whole(load_set: Callable[..., ImageTextSet]) -> Dataset:
    """A small set loaded whole (``load_set(split=, seed=, **options)``) and cut to its
    first ``size`` samples; counted by loading it."""

    def load(
        *, split: str, size: int | None, seed: int, root: str | None, **options: Any
    ) -> ImageTextSet:
        return _head(load_set(split=split, seed=seed, **options), size)

    def count(*, split: str, seed: int, root: str | None) -> int:
        return len(load(split=split, size=None, seed=seed, root=root))

    return Dataset(load=load, count=count)


def indexed(load: Loader, indices: Callable[..., tuple[Any, Any, Any]], name: str) -> Dataset:
    """A pool-backed set that builds only the samples asked for (Fashion-MNIST's training
    split is 54,000 images), counted from its index without building images."""

    def count(*, split: str, seed: int, root: str | None) -> int:
        return len(indices(split=split, seed=seed, root=root)[2])

    def sized(
        *, split: str, size: int | None, seed: int, root: str | None, **options: Any
    ) -> ImageTextSet:
        have = count(split=split, seed=seed, root=root)
        if size is not None and size > have:
            raise ValueError(f"{name} has {have} samples, {size} requested")
        return load(split=split, size=size, seed=seed, root=root, **options)

    return Dataset(load=sized, count=count)


def _folder(path: str) -> Dataset:
    """``<path>/<split>/captions.csv``: the user's own three splits."""

    def load(
        *, split: str, size: int | None, seed: int, root: str | None, **options: Any
    ) -> ImageTextSet:
        return _head(load_folder_set(Path(path) / split, **options), size)

    def count(*, split: str, seed: int, root: str | None) -> int:
        return len(read_captions(Path(path) / split)[2])

    return Dataset(load=load, count=count)


def _head(dataset: ImageTextSet, size: int | None) -> ImageTextSet:
    if size is None:
        return dataset
    if size > len(dataset):
        raise ValueError(f"{dataset.name} has {len(dataset)} samples, {size} requested")
    return dataset.subset(range(size))


DATASET_ROWS: dict[str, Dataset] = {f"world/{d}": rendered(d) for d in DOMAINS} | {
    "digits": whole(load_digits_set),
    "mnist": whole(load_mnist_set),
    "fashion-mnist": indexed(load_fashion_set, fashion_indices, "fashion-mnist"),
    "animal-mnist": indexed(load_animal_set, animal_indices, "animal-mnist"),
}
DATASETS = (*DATASET_ROWS, f"{FOLDER_PREFIX}<path>")


def _entry(name: str, split: str) -> Dataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if name.startswith(FOLDER_PREFIX):
        return _folder(name.removeprefix(FOLDER_PREFIX))
    if name not in DATASET_ROWS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASET_ROWS[name]


def available(name: str, *, split: str, seed: int = 0, root: str | None = None) -> int | None:
    """How many samples ``split`` of dataset ``name`` holds (None: rendered on demand, any
    number), without building its images: what a run can check before it starts."""
    return _entry(name, split).count(split=split, seed=seed, root=root)


def load_dataset(
    name: str,
    *,
    split: str,
    size: int | None = None,
    seed: int = 0,
    root: str | None = None,
    **options: Any,
) -> ImageTextSet:
    """Load ``split`` ("train", "validation" or "test") of dataset ``name`` (see
    :data:`DATASETS`).

    ``size`` keeps the first samples (world: renders that many; default 10,000 train /
    1,000 validation / 1,000 test). World splits are disjoint scene ranges; the real sets
    are seeded stratified splits, validation cut from the training pool; ``folder:<path>``
    reads ``<path>/<split>/captions.csv``. ``root`` is where ``fashion-mnist`` and
    ``animal-mnist`` look for their files first (``data.root``). ``options`` go to the
    underlying loader (e.g. ``caption_style``, ``noise_sigma``, ``image_size``).
    """
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return _entry(name, split).load(split=split, size=size, seed=seed, root=root, **options)


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
