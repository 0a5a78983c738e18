"""Tests for the real handwritten digits (scikit-learn's bundled scans)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgray.data.digits import load_digits_set
from fedgray.data.splits import stratified_split, three_way_split


def test_stratified_split_is_disjoint_cover_with_class_fractions() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, test = stratified_split(labels, test_fraction=0.3, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.bincount(labels[test]).tolist() == [3, 6, 9, 12]


def test_three_way_split_cuts_validation_from_training() -> None:
    labels = np.repeat(np.arange(4), [20, 40, 60, 80])
    parts = three_way_split(labels, test_fraction=0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(200))
    assert np.bincount(labels[parts["test"]]).tolist() == [5, 10, 15, 20]
    assert np.bincount(labels[parts["validation"]]).tolist() == [2, 3, 4, 6]  # 10% of the rest
    pool, test = stratified_split(labels, test_fraction=0.25, seed=3)
    assert np.array_equal(test, parts["test"])  # the test split does not move with validation
    assert set(parts["validation"]) <= set(pool)
    again = three_way_split(labels, test_fraction=0.25, seed=3)
    assert all(np.array_equal(again[k], parts[k]) for k in parts)
    assert not np.array_equal(three_way_split(labels, test_fraction=0.25, seed=4)["test"], test)


def test_split_is_stratified_and_deterministic() -> None:
    train = load_digits_set(split="train", seed=0)
    validation = load_digits_set(split="validation", seed=0)
    test = load_digits_set(split="test", seed=0)
    assert len(train) + len(validation) + len(test) == 1797 and 790 < len(test) < 830
    assert 90 < len(validation) < 110
    in_test = torch.bincount(test.labels, minlength=10)
    pool = torch.bincount(torch.cat([train.labels, validation.labels]), minlength=10)
    share = in_test / (in_test + pool)
    assert (share - 0.45).abs().max() <= 0.01  # a stratified split: each class within 1 point
    again = load_digits_set(split="test", seed=0)
    assert torch.equal(again.images, test.images) and again.captions == test.captions
    other = load_digits_set(split="test", seed=1)
    assert not torch.equal(other.labels, test.labels)


def test_images_captions_and_prompts() -> None:
    data = load_digits_set(split="test", seed=0, image_size=40)
    assert data.images.shape == (len(data), 3, 40, 40) and data.images.dtype == torch.float32
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey in 3 channels
    assert data.images[:, :, 0, :].min() == 1.0  # white paper border around the scan
    assert data.images.min() < 0.1  # dark ink
    assert data.class_names == [f"digit {d}" for d in range(10)]
    assert all(c == f"the digit {int(y)}" for c, y in zip(data.captions, data.labels, strict=True))
    assert all(p[0] == f"the digit {d}" for d, p in enumerate(data.class_prompts))
    assert "the digit 7 in black" in data.class_prompts[7]


def test_stratified_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.zeros(10, dtype=np.int64), test_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_digits_set(split="val", seed=0)
