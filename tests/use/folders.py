"""Folders of PNG images with a captions.csv, as a user brings them, for the use tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from fedgray.data.registry import load_dataset


def write_folder_split(root: Path, split: str, size: int) -> None:
    """``size`` world/sketch samples as PNG files with a captions.csv (file, caption, label)."""
    data = load_dataset("world/sketch", split=split, size=size, seed=0)
    folder = root / split
    folder.mkdir(parents=True)
    pixels = (data.images.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).byte().numpy()
    with (folder / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption", "label"])
        for i, image in enumerate(pixels):
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i:03d}.png")
            writer.writerow([f"{i:03d}.png", data.captions[i], data.class_names[data.labels[i]]])
