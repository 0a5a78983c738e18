"""Backbones: open_clip loading, access levels and the sealed wrapper."""

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, load_sealed
from fedgray.backbone.sealed import BackboneInterface, EntryPoint, SealedBackbone

__all__ = [
    "AccessLevel",
    "BackboneInterface",
    "BackboneLoadError",
    "EntryPoint",
    "QueryBudgetExceeded",
    "SealedBackbone",
    "SealedError",
    "create_clip",
    "get_tokenizer",
    "load_sealed",
]
