"""Tests for loading datasets by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fedgray.data import registry
from fedgray.data.digits import load_digits_set
from fedgray.data.registry import DATASETS, available, load_dataset, whole
from fedgray.resolver import load_config


def test_names() -> None:
    assert DATASETS == (
        "world/photo", "world/sketch", "world/inverted", "world/noisy", "digits", "mnist",
        "fashion-mnist", "animal-mnist", "folder:<path>",
    )  # fmt: skip


def test_a_dataset_is_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row made by its kind's maker serves loading, counting and the config's name check."""
    monkeypatch.setitem(registry.DATASET_ROWS, "digits-again", whole(load_digits_set))
    monkeypatch.setattr(registry, "DATASETS", (*registry.DATASETS, "digits-again"))
    ours, theirs = (load_dataset(n, split="test", size=30) for n in ("digits-again", "digits"))
    assert ours.captions == theirs.captions and ours.labels.tolist() == theirs.labels.tolist()
    assert available("digits-again", split="train") == available("digits", split="train") > 0
    assert load_config(None, ["data.dataset=digits-again"]).data.dataset == "digits-again"
    with pytest.raises(ValueError, match="digits has .* samples, 100000 requested"):
        load_dataset("digits-again", split="test", size=100_000)


def test_world_splits_are_disjoint_and_deterministic() -> None:
    train = load_dataset("world/sketch", split="train", size=40, seed=1)
    test = load_dataset("world/sketch", split="test", size=40, seed=1)
    assert len(train) == len(test) == 40 and train.name == "world/sketch"
    assert not any(torch.equal(a, b) for a, b in zip(train.images, test.images, strict=True))
    assert torch.equal(
        train.images, load_dataset("world/sketch", split="train", size=40, seed=1).images
    )
    assert not torch.equal(
        train.images, load_dataset("world/sketch", split="train", size=40).images
    )


def test_world_validation_is_a_third_disjoint_range() -> None:
    splits = {
        split: load_dataset("world/photo", split=split, size=30, seed=2)
        for split in ("train", "validation", "test")
    }
    pixels = {split: data.images.flatten(1) for split, data in splits.items()}
    for a, b in (("train", "validation"), ("validation", "test")):
        assert torch.cdist(pixels[a], pixels[b]).min() > 0  # no image in both
    again = load_dataset("world/photo", split="validation", size=30, seed=2)
    assert torch.equal(again.images, splits["validation"].images)


def test_world_options_pass_through() -> None:
    data = load_dataset("world/photo", split="train", size=5, caption_style="varied", image_size=16)
    assert data.images.shape == (5, 3, 16, 16)


def test_digits_size_keeps_first_samples() -> None:
    full = load_dataset("digits", split="train", seed=3)
    head = load_dataset("digits", split="train", size=10, seed=3)
    assert torch.equal(head.images, full.images[:10]) and head.captions == full.captions[:10]
    with pytest.raises(ValueError, match="digits has 889 samples, 5000 requested"):
        load_dataset("digits", split="train", size=5000)


def test_folder_reads_the_split_subfolder(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    Image.new("RGB", (8, 8), "white").save(tmp_path / "test" / "a.png")
    (tmp_path / "test" / "captions.csv").write_text("file,caption\na.png,a white square\n")
    data = load_dataset(f"folder:{tmp_path}", split="test", image_size=8)
    assert data.captions == ["a white square"] and data.images.shape == (1, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match="train"):
        load_dataset(f"folder:{tmp_path}", split="train")


def test_bad_names_and_arguments() -> None:
    with pytest.raises(
        ValueError, match=r"unknown dataset 'world/cartoon'; known: world/photo, .*digits"
    ):
        load_dataset("world/cartoon", split="train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="size must be >= 0"):
        load_dataset("world/photo", split="train", size=-1)
