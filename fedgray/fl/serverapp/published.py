"""The backbone as the server knows it without holding it: its published interface.

A federation's server needs the backbone's shapes (to build the adapters' initial
tensors) and its parameter count (for the traffic ratio), never its weights, unless it
evaluates centrally. Both come from the architecture: for a sealed artifact the one its
signed manifest names (read with the verify key, nothing decrypted), else the configured
open_clip model. The architecture is built on torch's ``meta`` device: shapes without
storage, so no weight ever exists in the server's process.

The logit scale is a weight, not a shape: the published interface carries NaN there, and
nothing on the server reads it (scoring opens the real backbone).
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch

from fedgray.backbone import BackboneInterface, families
from fedgray.backbone.access import AccessLevel
from fedgray.backbone.artifact import architecture, read_manifest
from fedgray.backbone.loading import open_clip_module
from fedgray.backbone.sealed import entry_points
from fedgray.config import BackboneConfig


class WeightsNeeded(RuntimeError):
    """A method asked the published interface for more than shapes (features, weights,
    the tokenizer): its initial adapters need the opened backbone."""


def _model_config(spec: BackboneConfig) -> dict[str, Any] | None:
    if spec.artifact is not None:
        assert spec.verify_key is not None  # by BackboneConfig
        return read_manifest(spec.artifact, verify_key=spec.verify_key).model_config
    if spec.runtime is not None:  # a served runtime: its manifest is on its own machine
        return None
    cfg = open_clip_module().get_model_config(spec.name)
    return None if cfg is None else {"model_cfg": cfg}


def published_interface(spec: BackboneConfig) -> BackboneInterface | None:
    """What a site is told about ``spec``'s backbone, from its architecture alone; None
    where the server cannot read the architecture (a served runtime, an unknown name)."""
    model_config = _model_config(spec)
    if model_config is None:
        return None
    with torch.device("meta"):
        model = architecture(model_config)
    level, shapes = AccessLevel(spec.level), families.describe(model)
    return BackboneInterface(
        name=spec.name,
        level=level,
        image_size=shapes.image_size,
        embed_dim=shapes.embed_dim,
        context_length=shapes.context_length,
        token_width=shapes.token_width,
        logit_scale=float("nan"),  # a weight (see the module doc)
        parameter_count=sum(p.numel() for p in model.parameters()),
        vocab_size=shapes.vocab_size,
        entry_points=entry_points(model) if level.entry_points else (),
        image_family=shapes.image_family,
        text_family=shapes.text_family,
    )


class InterfaceOnly:
    """A stand-in backbone that answers with its interface and refuses everything else
    (:class:`WeightsNeeded`): what the adapters' builders may use on the server."""

    def __init__(self, interface: BackboneInterface) -> None:
        self.interface = interface
        self.level = interface.level
        self.device = torch.device("cpu")

    def __getattr__(self, name: str) -> NoReturn:
        raise WeightsNeeded(f"the published interface has no '{name}'")
