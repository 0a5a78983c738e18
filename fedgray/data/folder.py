"""User data from a folder: images next to a ``captions.csv`` (file, caption[, label])."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fedgray.data.sets import UNLABELLED, ImageTextSet

CAPTIONS_FILE = "captions.csv"
REQUIRED_COLUMNS = ("file", "caption")


def read_image(path: Path, image_size: int, where: str) -> np.ndarray:
    """One image as uint8 [H, W, 3], centre-cropped to a square of ``image_size``; a missing
    or unreadable file is one line naming ``where``."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image not found: {path}")
    try:
        with Image.open(path) as image:
            square = ImageOps.fit(image.convert("RGB"), (image_size, image_size))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{where}: cannot read image {path}: {error}") from None
    return np.asarray(square, dtype=np.uint8)


def read_captions(root: Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    """``root/captions.csv``: its path, columns and rows (checked: present, UTF-8, the
    required columns, at least one row)."""
    table = root / CAPTIONS_FILE
    if not table.is_file():
        raise FileNotFoundError(f"no {CAPTIONS_FILE} in {root}")
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as error:
        raise ValueError(f"{table}: not UTF-8 text (byte {error.start})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{table}: missing column(s) {', '.join(missing)}; found {columns}")
    if not rows:
        raise ValueError(f"{table}: no rows")
    return table, columns, rows


def load_folder_set(root: str | Path, *, image_size: int = 32) -> ImageTextSet:
    """Load ``root/captions.csv`` and the images it names (paths relative to ``root``).

    Each image is centre-cropped to a square and resized to ``image_size``. With a
    ``label`` column (a class name per row) the classes are its sorted distinct values and
    each class's prompt is its name; without one, every sample is unlabelled (label -1).
    """
    root = Path(root)
    table, columns, rows = read_captions(root)
    needed = (*REQUIRED_COLUMNS, "label") if "label" in columns else REQUIRED_COLUMNS
    pixels: list[np.ndarray] = []
    captions: list[str] = []
    names: list[str] = []
    for line, row in enumerate(rows, start=2):
        where = f"{table} line {line}"
        values = {k: (row.get(k) or "").strip() for k in needed}
        empty = [k for k in needed if not values[k]]
        if empty:
            raise ValueError(f"{where}: empty {', '.join(empty)}")
        pixels.append(read_image(root / values["file"], image_size, where))
        captions.append(values["caption"])
        names.append(values.get("label", ""))
    class_names = sorted(set(names)) if "label" in needed else []
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index.get(name, UNLABELLED) for name in names]
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
    return ImageTextSet(
        images=images.contiguous(),
        captions=captions,
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=class_names,
        class_prompts=[[name] for name in class_names],
        name=f"folder:{root}",
    )
