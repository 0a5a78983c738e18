"""Backbones: open_clip loading, access levels, the sealed wrapper and sealed artifacts."""

from typing import TypeAlias

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.artifact import load_artifact, seal
from fedgray.backbone.keys import ArtifactError, generate_keys
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, load_sealed
from fedgray.backbone.runtime import IsolatedBackbone
from fedgray.backbone.sealed import BackboneInterface, EntryPoint, SealedBackbone

#: A backbone a site holds: sealed in-process, or served by the isolated runtime (same API).
Backbone: TypeAlias = SealedBackbone | IsolatedBackbone

__all__ = [
    "AccessLevel",
    "ArtifactError",
    "Backbone",
    "BackboneInterface",
    "BackboneLoadError",
    "EntryPoint",
    "IsolatedBackbone",
    "QueryBudgetExceeded",
    "SealedBackbone",
    "SealedError",
    "create_clip",
    "generate_keys",
    "get_tokenizer",
    "load_artifact",
    "load_sealed",
    "seal",
]
