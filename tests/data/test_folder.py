"""Tests for loading a user's folder of images and captions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fedgray.data.folder import load_folder_set
from fedgray.data.sets import UNLABELLED


def _write(root: Path, rows: list[str], header: str = "file,caption,label") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, colour in (("red.png", (255, 0, 0)), ("blue.jpg", (0, 0, 255))):
        Image.new("RGB", (64, 48), colour).save(root / name)
    (root / "captions.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


def test_loads_images_captions_and_labels(tmp_path: Path) -> None:
    root = _write(tmp_path, ["red.png,a red square,red", "blue.jpg,a blue square,blue"])
    data = load_folder_set(root, image_size=16)
    assert data.images.shape == (2, 3, 16, 16) and data.captions == [
        "a red square",
        "a blue square",
    ]
    assert data.class_names == ["blue", "red"] and data.labels.tolist() == [1, 0]
    assert data.class_prompts == [["blue"], ["red"]]
    assert data.images[0, 0].mean() > 0.95 and data.images[0, 2].mean() < 0.05
    assert data.images[1, 2].mean() > 0.9


def test_without_label_column_samples_are_unlabelled(tmp_path: Path) -> None:
    root = _write(tmp_path, ["red.png,a red square"], header="file,caption")
    data = load_folder_set(str(root))
    assert data.labels.tolist() == [UNLABELLED] and data.class_names == []
    assert data.images.shape == (1, 3, 32, 32)


def test_missing_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no captions.csv in"):
        load_folder_set(tmp_path / "absent")
    root = _write(tmp_path, ["red.png,a,x", "green.png,b,y"])
    with pytest.raises(FileNotFoundError, match=r"line 3: image not found: .*green\.png"):
        load_folder_set(root)


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["red.png,,x"], "file,caption,label", "line 2: empty caption"),
        (["red.png,a,"], "file,caption,label", "line 2: empty label"),
        (["red.png"], "file,label", r"missing column\(s\) caption"),
        ([], "file,caption", "no rows"),
        (["captions.csv,a"], "file,caption", "line 2: cannot read image"),
    ],
)
def test_bad_rows(tmp_path: Path, rows: list[str], header: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_folder_set(_write(tmp_path, rows, header))


def test_loaded_set_validates(tmp_path: Path) -> None:
    data = load_folder_set(_write(tmp_path, ["red.png,a,x"]))
    with pytest.raises(ValueError, match="do not match"):
        type(data)(data.images, data.captions * 2, data.labels, ["x"], [["x"]], "bad")
    with pytest.raises(ValueError, match="NaN"):
        type(data)(data.images * torch.nan, data.captions, data.labels, ["x"], [["x"]], "bad")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        type(data)(data.images, data.captions, data.labels + 1, ["x"], [["x"]], "bad")
    assert len(data.subset([0, 0])) == 2


def test_a_captions_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    root = _write(tmp_path, ["red.png,a red square,red"])
    (root / "captions.csv").write_bytes(b"file,caption\nred.png,caf\xe9 au lait\n")
    with pytest.raises(ValueError, match=r"captions\.csv: not UTF-8 text \(byte 24\)$") as raised:
        load_folder_set(root)
    assert str(root) in str(raised.value)
