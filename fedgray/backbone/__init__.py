"""Backbones: open_clip loading, access levels, the sealed wrapper and sealed artifacts."""

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.artifact import load_artifact, seal
from fedgray.backbone.keys import ArtifactError, generate_keys
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, load_sealed
from fedgray.backbone.sealed import BackboneInterface, EntryPoint, SealedBackbone

__all__ = [
    "AccessLevel",
    "ArtifactError",
    "BackboneInterface",
    "BackboneLoadError",
    "EntryPoint",
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
