"""Tests for Animal-MNIST read from its pickles by a restricted unpickler (``animal-mnist``),
and for that unpickler against pickles written by an attacker."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fedgray.data import animal
from fedgray.data.animal import IMAGES, LABELS, animal_dir, load_animal_set
from fedgray.data.registry import available, load_dataset
from fedgray.data.safe_pickle import load_array

INSTALLED = importlib.util.find_spec(animal.PACKAGE) is not None
needs_package = pytest.mark.skipif(
    not INSTALLED, reason=f"animal-mnist absent: pip install --no-deps {animal.PIN} (CI has it)"
)


def _pickle(path: Path, value: object) -> Path:
    path.write_bytes(gzip.compress(pickle.dumps(value, protocol=4)))
    return path


def _fake_root(root: Path, n: int = 100) -> Path:
    pixels = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
    _pickle(root / IMAGES, pixels)
    _pickle(root / LABELS, np.arange(n, dtype=np.int64) % 10)
    animal._pool.cache_clear()
    return root


def test_three_splits_from_data_root(tmp_path: Path) -> None:
    root = str(_fake_root(tmp_path))

    def ids(split: str, seed: int = 0) -> list[int]:
        data = load_dataset("animal-mnist", split=split, seed=seed, root=root)
        return ((1 - data.images[:, 0, 16, 16]) * 255).round().long().tolist()

    parts = {split: ids(split) for split in ("train", "validation", "test")}
    assert [len(p) for p in parts.values()] == [70, 10, 20]  # per class: 7, 1 and 2
    assert sorted(sum(parts.values(), [])) == list(range(100))  # disjoint, all of the pool
    assert parts == {split: ids(split) for split in parts}  # deterministic by seed
    assert ids("test", seed=1) != parts["test"]
    assert available("animal-mnist", split="train", root=root) == 70
    data = load_animal_set(split="test", seed=0, root=root, size=5)
    assert data.class_names[5] == "elephant" and "an elephant" in data.class_prompts[5][0]
    pairs = zip(data.captions, data.labels, strict=True)
    assert all(caption in data.class_prompts[int(y)] for caption, y in pairs)


class _Shell:
    """What an attacker pickles: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_refuses_a_pickle_that_runs_a_command(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _pickle(tmp_path / IMAGES, _Shell(f"touch {marker}"))
    with pytest.raises(ValueError, match=r"refusing to load (posix|nt)\.system"):
        load_array(evil)
    assert not marker.exists()
    with gzip.open(evil) as handle:  # the same bytes through pickle.load do run it
        pickle.load(handle)
    assert marker.exists()


def test_refuses_a_command_hidden_inside_an_array(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hidden = np.array([_Shell(f"touch {marker}"), 1], dtype=object)  # numpy's names first
    with pytest.raises(ValueError, match="refusing to load"):
        load_array(_pickle(tmp_path / "hidden.gz", hidden))
    assert not marker.exists()
    with pytest.raises(ValueError, match="expected a numeric numpy array"):
        load_array(_pickle(tmp_path / "strings.gz", np.array(["a", "b"], dtype=object)))
    with pytest.raises(ValueError, match="refusing to load builtins.eval"):
        raw = b"\x80\x04cbuiltins\neval\n(V__import__('os')\ntR."  # hand-written GLOBAL
        (tmp_path / "eval.gz").write_bytes(gzip.compress(raw))
        load_array(tmp_path / "eval.gz")


def test_absent_files_are_one_line_saying_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        animal_dir(tmp_path)
    message = str(caught.value)
    assert message.startswith("data.dataset: 'animal-mnist' needs ") and "\n" not in message
    assert f"pip install --no-deps {animal.PIN}" in message


@needs_package
def test_the_package_data_reads_without_its_loader() -> None:
    animal._pool.cache_clear()
    pixels, labels = animal._pool(animal_dir(None))
    assert pixels.shape == (10_000, 28, 28) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert "tensorflow" not in __import__("sys").modules
    counts = {s: available("animal-mnist", split=s) for s in ("train", "validation", "test")}
    assert counts == {"train": 7200, "validation": 800, "test": 2000}
    test = load_dataset("animal-mnist", split="test", size=50)
    assert test.images.shape == (50, 3, 32, 32)
    assert torch.equal(test.images[:, 0], test.images[:, 2])  # grey in 3 channels
