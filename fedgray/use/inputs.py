"""What ``fedgray predict`` and ``fedgray evaluate`` read: images, class names, captions.

Images are read as the run read its folder datasets (:mod:`fedgray.data.folder`: centre
crop, the same size), so a folder scored here is the folder a run would have trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedgray.config import DataConfig
from fedgray.data.folder import CAPTIONS_FILE, load_folder_set, read_captions, read_image
from fedgray.data.registry import load_dataset
from fedgray.data.sets import ImageTextSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_IMAGE_SIZE = 32  # load_folder_set's size, which runs on folder datasets train at


@dataclass(frozen=True)
class Images:
    """Images to score and the file each came from (relative to the folder)."""

    pixels: torch.Tensor
    files: list[str]
    labelled: ImageTextSet | None  # the folder's captions.csv, where it has one


def read_images(folder: Path) -> Images:
    """Every image of ``folder``: the files its ``captions.csv`` names (with their captions
    and labels) or, without one, every image file in it, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: images folder not found")
    if (folder / CAPTIONS_FILE).is_file():
        dataset = load_folder_set(folder, image_size=FOLDER_IMAGE_SIZE)
        files = [row["file"].strip() for row in read_captions(folder)[2]]
        return Images(dataset.images, files, dataset)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(
            f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) and no {CAPTIONS_FILE}"
        )
    pixels = np.stack([read_image(p, FOLDER_IMAGE_SIZE, str(p)) for p in paths])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return Images(images, [p.name for p in paths], None)


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one ``what`` each; at least one."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    named = [line for line in lines if line]
    if not named:
        raise ValueError(f"{path}: no {what}s (one per line)")
    return named


def run_classes(data: DataConfig) -> tuple[list[str], list[list[str]]]:
    """The run's own class names and prompts (those its classification task scored)."""
    dataset = load_dataset(data.dataset, split="test", size=1, seed=data.seed)
    if not dataset.class_names:
        raise ValueError(
            f"data.dataset: '{data.dataset}' has no classes; give --classes or --captions"
        )
    return list(dataset.class_names), [list(p) for p in dataset.class_prompts]
