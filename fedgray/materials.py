"""One site's setup from a config: its sealed backbone and its prepared data."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from fedgray.backbone import Backbone
from fedgray.backbone.access import AccessLevel
from fedgray.backbone.artifact import load_artifact
from fedgray.backbone.loading import load_sealed
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.config import Config, DataConfig
from fedgray.config_schema import ConfigError, shown
from fedgray.data.registry import available, load_dataset, untrained_classes
from fedgray.devices import resolve_device
from fedgray.owner.pretrain import resolve_pretrained
from fedgray.tasks.data import TaskData, prepare


class ArtifactOptions(TypedDict):
    """Keyword arguments of ``load_artifact`` and ``IsolatedBackbone`` besides the path."""

    verify_key: str | Path
    content_key: str | Path
    name: str | None
    level: AccessLevel | str | None
    query_budget: int | None
    sample_budget: int | None
    gradient_budget: int | None
    min_version: int | None
    revocations: str | Path | None


def open_backbone(config: Config, *, progress: bool = True) -> Backbone:
    """Load and seal the configured backbone: from its sealed artifact when one is set
    (in its own process with ``backbone.isolated``), else by name and pretrained weights
    (pretraining the built-in one if not cached), on ``train.device``."""
    spec, device = config.backbone, resolve_device(config.train.device)
    if spec.runtime is not None:
        return IsolatedBackbone.connect(
            spec.runtime, name=spec.name, level=spec.level, device=device
        )
    if spec.artifact is not None:
        assert spec.verify_key is not None and spec.content_key is not None  # by BackboneConfig
        options: ArtifactOptions = {
            "verify_key": spec.verify_key,
            "content_key": spec.content_key,
            "name": spec.name,
            "level": spec.level,
            "query_budget": spec.query_budget,
            "sample_budget": spec.sample_budget,
            "gradient_budget": spec.gradient_budget,
            "min_version": spec.min_version,
            "revocations": spec.revocations,
        }
        if spec.isolated:
            threads = config.train.threads
            return IsolatedBackbone(spec.artifact, threads=threads, device=device, **options)
        return load_artifact(spec.artifact, device=device, **options)
    pretrained = resolve_pretrained(spec.name, spec.pretrained, config.pretrain, progress=progress)
    budgets = {
        "query_budget": spec.query_budget,
        "sample_budget": spec.sample_budget,
        "gradient_budget": spec.gradient_budget,
    }
    return load_sealed(spec.name, pretrained, level=spec.level, device=device, **budgets)


def load_task_data(data: DataConfig, backbone: Backbone, *, split: str) -> TaskData:
    """The configured dataset's ``split`` in the backbone's input format."""
    sizes = {"train": data.train_size, "validation": data.validation_size}
    dataset = load_dataset(
        data.dataset,
        split=split,
        size=sizes.get(split, data.test_size),
        seed=data.seed,
        root=data.root,
    )
    prepared = prepare(dataset, backbone.tokenize)
    return prepared.to(backbone.device)


def check_size(name: str, split: str, wanted: int, data: DataConfig) -> None:
    """``name``'s ``split`` holds ``wanted`` samples; else one line naming the size field."""
    try:
        have = available(name, split=split, seed=data.seed, root=data.root)
    except (FileNotFoundError, ValueError) as error:
        message = str(error)
        raise ConfigError(
            message if message.startswith("data.") else f"data.dataset: {message}"
        ) from None
    if have is not None and have < wanted:
        raise ConfigError(
            f"data.{split}_size: {name} has {have} {split} samples, {wanted} requested"
        )


def check_splits(data: DataConfig) -> None:
    """Each split of ``data.dataset`` holds the size asked, and every class with test
    examples has training ones: a single-site run's data, checked before anything loads."""
    for split in ("train", "validation", "test"):
        check_size(data.dataset, split, getattr(data, f"{split}_size"), data)
    check_classes(data.dataset)


def check_classes(dataset: str) -> None:
    """Every class with test examples has training examples (checked before a run starts)."""
    missing = untrained_classes(dataset)
    if missing:
        raise ConfigError(
            f"data.dataset: class {shown(missing[0])} of {dataset} has test examples but no "
            "training examples"
        )
