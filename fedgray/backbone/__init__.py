"""Backbones: open_clip loading, access levels, the sealed wrapper and opening sealed artifacts
(the isolated runtime is :mod:`fedgray.backbone.runtime`; writing artifacts and keys is the
owner's, :mod:`fedgray.owner`)."""

from typing import TypeAlias

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.artifact import load_artifact
from fedgray.backbone.keys import ArtifactError
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, load_sealed
from fedgray.backbone.runtime.isolated import IsolatedBackbone
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
    "get_tokenizer",
    "load_artifact",
    "load_sealed",
]
