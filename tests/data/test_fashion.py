"""Tests for Fashion-MNIST read from its IDX files (dataset ``fashion-mnist``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fedgray.data import fashion
from fedgray.data.fashion import DEBIAN_DIR, FILES, fashion_dir, load_fashion_set, read_idx
from fedgray.data.registry import available, load_dataset
from tests.helpers import assert_close

INSTALLED = all((DEBIAN_DIR / name).is_file() for pair in FILES.values() for name in pair)
needs_package = pytest.mark.skipif(
    not INSTALLED,
    reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist (CI installs it)",
)


def _write_idx(path: Path, array: np.ndarray, *, magic: int) -> None:
    """An IDX file as the dataset's repository ships it: big-endian header, gzipped."""
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fake_root(root: Path, *, train: int = 40, test: int = 20) -> Path:
    """Four small IDX files, labels cycling through the 10 classes, pixel = sample index."""
    for part, n in (("train", train), ("test", test)):
        images, labels = FILES[part]
        pixels = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
        _write_idx(root / images, pixels, magic=0x0803)
        _write_idx(root / labels, np.arange(n) % 10, magic=0x0801)
    fashion._part.cache_clear()
    return root


def test_reads_idx_files_from_data_root(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    test = load_fashion_set(split="test", seed=0, root=root)
    assert len(test) == 20 and test.labels.tolist() == [i % 10 for i in range(20)]
    # pixel value i (ink) is drawn as 1 - i/255 inside the 28x28 frame, white padding
    assert_close(test.images[3, :, 2:30, 2:30], torch.full((3, 28, 28), 1 - 3 / 255), terms=1)
    assert test.images[:, :, :2].min() == 1.0
    assert test.class_names[9] == "ankle boot" and test.captions[8] == "a photo of a bag"
    assert test.captions[9] == "a black and white photo of an ankle boot"  # template 9 mod 4
    assert test.class_prompts[7] == [t.format("a sneaker") for t in fashion.TEMPLATES]
    assert sorted(test.public_captions) == sorted(p for c in test.class_prompts for p in c)


def test_validation_is_cut_from_training_and_test_is_the_official_part(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, train=100, test=30)

    def ids(split: str, seed: int = 0) -> list[int]:  # pixel value = index in its part
        data = load_dataset("fashion-mnist", split=split, seed=seed, root=str(root))
        return ((1 - data.images[:, 0, 16, 16]) * 255).round().long().tolist()

    train, validation = ids("train"), ids("validation")
    assert (len(train), len(validation)) == (90, 10) and not set(train) & set(validation)
    assert set(train) | set(validation) == set(range(100))
    assert ids("test") == list(range(30)) == ids("test", seed=4)  # official order, no seed
    assert ids("validation") == validation and ids("validation", seed=1) != validation
    assert available("fashion-mnist", split="validation", root=str(root)) == 10
    with pytest.raises(ValueError, match="fashion-mnist has 10 samples, 11 requested"):
        load_dataset("fashion-mnist", split="validation", size=11, root=str(root))


def test_absent_files_are_one_line_saying_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        fashion_dir(tmp_path)
    message = str(caught.value)
    assert message.startswith("data.dataset: 'fashion-mnist' needs ") and "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path) in message


def test_a_corrupt_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    _write_idx(path, np.zeros((2, 28, 28)), magic=0x0801)  # says 1 dimension, holds 3
    with pytest.raises(ValueError, match="header says"):
        read_idx(path, magic=0x0801)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path, magic=0x0803)


@needs_package
def test_the_debian_package_holds_the_whole_set() -> None:
    fashion._part.cache_clear()
    with gzip.open(DEBIAN_DIR / FILES["train"][0]) as handle:  # the raw file: 16-byte header
        first = np.frombuffer(handle.read(16 + 784)[16:], dtype=np.uint8).reshape(28, 28)
    pixels, labels = fashion._part(fashion_dir(None), "train")
    assert pixels.shape == (60_000, 28, 28) and np.array_equal(pixels[0], first)
    assert np.bincount(labels).tolist() == [6000] * 10
    counts = {s: available("fashion-mnist", split=s) for s in ("train", "validation", "test")}
    assert counts == {"train": 54_000, "validation": 6000, "test": 10_000}
    validation = load_dataset("fashion-mnist", split="validation", seed=0)
    assert torch.bincount(validation.labels).tolist() == [600] * 10
    head = load_dataset("fashion-mnist", split="train", size=64, seed=0)
    assert head.images.shape == (64, 3, 32, 32) and head.name == "fashion-mnist"
