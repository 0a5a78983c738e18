"""Datasets for fedgray: the procedural world, real digits, Fashion-MNIST and Animal-MNIST,
user folders, each in train, validation and test splits, and partitioners."""

from __future__ import annotations

from fedgray.data.digits import load_digits_set
from fedgray.data.folder import load_folder_set
from fedgray.data.partitioners import PARTITIONERS, by_group, dirichlet, iid
from fedgray.data.registry import DATASETS, load_dataset
from fedgray.data.sets import SPLITS, UNLABELLED, ImageTextSet
from fedgray.data.world import (
    CLASS_NAMES,
    COLOURS,
    DIGITS,
    DOMAINS,
    SHAPES,
    Scene,
    caption,
    class_prompts,
    render,
    sample_scene,
)
from fedgray.data.world_set import make_world_set

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "DATASETS",
    "DIGITS",
    "DOMAINS",
    "PARTITIONERS",
    "SHAPES",
    "SPLITS",
    "UNLABELLED",
    "ImageTextSet",
    "Scene",
    "by_group",
    "caption",
    "class_prompts",
    "dirichlet",
    "iid",
    "load_dataset",
    "load_digits_set",
    "load_folder_set",
    "make_world_set",
    "render",
    "sample_scene",
]
