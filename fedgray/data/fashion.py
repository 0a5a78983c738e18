"""Fashion-MNIST (Zalando, MIT): 60,000 training and 10,000 test 28x28 photos of clothes in
10 named classes, read from its four IDX files with numpy.

The files are looked for in ``data.root``, then where Debian's ``dataset-fashion-mnist``
package installs them; nothing is downloaded. The official test set is the test split; the
validation split is cut from the official training set (:mod:`fedgray.data.splits`).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedgray.data.scans import SCAN_SIDE, named_class_set
from fedgray.data.sets import ImageTextSet
from fedgray.data.splits import carve_validation

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {  # part -> (images, labels), the names the dataset's own repository gives them
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NOUNS = {  # class name -> the noun phrase the caption templates take, in label order
    "t-shirt": "a t-shirt",
    "trousers": "a pair of trousers",
    "pullover": "a pullover",
    "dress": "a dress",
    "coat": "a coat",
    "sandal": "a sandal",
    "shirt": "a shirt",
    "sneaker": "a sneaker",
    "bag": "a bag",
    "ankle boot": "an ankle boot",
}
TEMPLATES = (
    "a photo of {}",
    "a black and white photo of {}",
    "a low resolution photo of {}",
    "a product photo of {}",
)
_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801  # IDX: unsigned bytes, 3 and 1 dimensions


def fashion_dir(root: str | Path | None) -> Path:
    """The folder holding the four IDX files: ``root`` when given, else Debian's; a
    one-line error saying how to get them when neither has them."""
    names = [name for pair in FILES.values() for name in pair]
    candidates = [Path(root)] if root is not None else [DEBIAN_DIR]
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    raise FileNotFoundError(
        f"data.dataset: 'fashion-mnist' needs {', '.join(names)} in "
        f"{candidates[0]}: apt-get install dataset-fashion-mnist (Debian, Ubuntu), or download "
        "them from github.com/zalandoresearch/fashion-mnist into data.root"
    )


def read_idx(path: Path, *, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped), checked against its header."""
    raw = gzip.decompress(path.read_bytes())
    dims = magic & 0xFF
    header = np.frombuffer(raw, dtype=">u4", count=1 + dims)
    if len(raw) < 4 * (1 + dims) or int(header[0]) != magic:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s)")
    shape = tuple(int(n) for n in header[1:])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + dims))
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {body.size} values")
    return body.reshape(shape)


@lru_cache(maxsize=2)
def _part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """One official part's images (uint8 [N, 28, 28]) and labels (int64 [N])."""
    images_file, labels_file = FILES[part]
    pixels = read_idx(folder / images_file, magic=_IMAGES_MAGIC)
    labels = read_idx(folder / labels_file, magic=_LABELS_MAGIC).astype(np.int64)
    if pixels.shape[1:] != (SCAN_SIDE, SCAN_SIDE) or len(pixels) != len(labels):
        raise ValueError(f"{folder}: {pixels.shape} images do not match {labels.shape} labels")
    if labels.size and not 0 <= labels.min() <= labels.max() < len(NOUNS):
        raise ValueError(f"{folder / labels_file}: labels outside 0..{len(NOUNS) - 1}")
    return pixels, labels


def fashion_indices(
    *, split: str, seed: int, root: str | Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool ``split`` is drawn from (images, labels) and its indices in that pool."""
    folder = fashion_dir(root)
    if split == "test":
        pixels, labels = _part(folder, "test")
        return pixels, labels, np.arange(len(labels))
    pixels, labels = _part(folder, "train")
    train, validation = carve_validation(labels, np.arange(len(labels)), seed=seed)
    return pixels, labels, train if split == "train" else validation


def load_fashion_set(
    *,
    split: str,
    seed: int,
    size: int | None = None,
    root: str | Path | None = None,
    image_size: int = 32,
) -> ImageTextSet:
    """The first ``size`` samples (all when None) of ``split``: "test" is the official
    10,000, "train" and "validation" a seeded stratified 90/10 cut of the official 60,000.

    Captions come from class-name templates ("a product photo of a sneaker"), so caption
    retrieval is as hard as the classes are apart; prompts are every template per class.
    """
    pixels, labels, chosen = fashion_indices(split=split, seed=seed, root=root)
    return named_class_set(
        pixels,
        labels,
        chosen[:size],
        nouns=NOUNS,
        templates=TEMPLATES,
        name="fashion-mnist",
        image_size=image_size,
    )
