"""One site's setup from a config: its sealed backbone and its prepared data."""

from __future__ import annotations

from fedgray.backbone.loading import BUILTIN_TAG, load_sealed
from fedgray.backbone.pretrain import builtin_checkpoint
from fedgray.backbone.sealed import SealedBackbone
from fedgray.config import Config
from fedgray.data.registry import load_dataset
from fedgray.tasks.data import TaskData, prepare


def open_backbone(config: Config, *, progress: bool = True) -> SealedBackbone:
    """Load and seal the configured backbone (pretraining the built-in one if not cached)."""
    spec = config.backbone
    pretrained = spec.pretrained
    if pretrained == BUILTIN_TAG:
        pretrained = builtin_checkpoint(spec.name, config.pretrain, progress=progress)
    return load_sealed(spec.name, pretrained, level=spec.level, query_budget=spec.query_budget)


def load_task_data(config: Config, backbone: SealedBackbone, *, split: str) -> TaskData:
    """The configured dataset's ``split`` in the backbone's input format."""
    size = config.data.train_size if split == "train" else config.data.test_size
    dataset = load_dataset(config.data.dataset, split=split, size=size, seed=config.data.seed)
    return prepare(dataset, backbone.tokenize, image_size=backbone.interface.image_size)
