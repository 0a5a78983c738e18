"""Per-process caches: one sealed backbone and one copy of each dataset per process.

Simulated sites handled by the same process (a Ray actor, or the caller with a LocalGrid)
share them. Nothing here is ever captured in an app's closure: Flower ships the ClientApp
with every message, and a captured backbone would be copied each time.
"""

from __future__ import annotations

import dataclasses
import json

import torch

from fedgray.backbone import Backbone, IsolatedBackbone
from fedgray.config import Config
from fedgray.config_schema import to_dict
from fedgray.materials import load_task_data, open_backbone
from fedgray.tasks import TaskData

_BACKBONES: dict[str, Backbone] = {}
_DATA: dict[tuple[str, str, str, int, int], TaskData] = {}


def _backbone_key(config: Config) -> str:
    return json.dumps(
        {
            "backbone": to_dict(config.backbone),
            "pretrain": to_dict(config.pretrain),
            "device": config.train.device,
        },
        sort_keys=True,
    )


def forget() -> None:
    """Empty both caches: a long-lived site process starting another run opens its
    backbone and data afresh (see :mod:`fedgray.fl.clientapp.resident`)."""
    _BACKBONES.clear()
    _DATA.clear()


def shared_backbone(config: Config) -> Backbone:
    """The configured sealed backbone, loaded once per process."""
    key = _backbone_key(config)
    if key not in _BACKBONES:
        with torch.random.fork_rng():
            torch.manual_seed(config.pretrain.seed)  # same random weights in every process
            _BACKBONES[key] = open_backbone(config, progress=False)
    return _BACKBONES[key]


def forget_backbones() -> None:
    """Drop (closing isolated runtimes) the backbones loaded so far in this process, so
    that a new run spends from a fresh budget (``backbone.sample_budget`` and the others)
    rather than from what earlier runs of the same process spent."""
    for backbone in _BACKBONES.values():
        if isinstance(backbone, IsolatedBackbone):
            backbone.close()
    _BACKBONES.clear()


def shared_data(config: Config, *, dataset: str, split: str, size: int) -> TaskData:
    """``size`` samples of ``dataset``'s ``split`` in the backbone's format, once per process."""
    key = (_backbone_key(config), dataset, split, size, config.data.seed)
    if key not in _DATA:
        data = dataclasses.replace(config.data, dataset=dataset)
        setattr(data, f"{split}_size", size)  # train_size, validation_size or test_size
        _DATA[key] = load_task_data(data, shared_backbone(config), split=split)
    return _DATA[key]
