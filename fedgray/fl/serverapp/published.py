"""The backbone as the server knows it without holding it: its published interface.

A federation's server needs the backbone's shapes (to build the adapters' initial
tensors) and its parameter count (for the traffic ratio), never its weights, unless it
evaluates centrally. Both come from the architecture: for a sealed artifact the one its
signed manifest names (read with the verify key, nothing decrypted), else the configured
open_clip model. The architecture is built on torch's ``meta`` device: shapes without
storage, so no weight ever exists in the server's process.

The logit scale is a weight, not a shape: the published interface carries NaN there, and
nothing on the server reads it (scoring opens the real backbone).

A run asks for the interface more than once (the initial adapters, the traffic ratio); an
artifact's manifest is read and its signature verified once per process, again only when
the artifact or the verify key is replaced.
"""

from __future__ import annotations

import functools
import os
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


def _model_config(
    name: str, artifact: str | None, verify_key: str | None, runtime: str | None
) -> dict[str, Any] | None:
    if artifact is not None:
        assert verify_key is not None  # by BackboneConfig
        return read_manifest(artifact, verify_key=verify_key).model_config
    if runtime is not None:  # a served runtime: its manifest is on its own machine
        return None
    cfg = open_clip_module().get_model_config(name)
    return None if cfg is None else {"model_cfg": cfg}


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    """Which file ``path`` is now (inode, size, modification time): a replaced one differs."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # reading it raises the one-line error
    return status.st_ino, status.st_size, status.st_mtime_ns


def published_interface(spec: BackboneConfig) -> BackboneInterface | None:
    """What a site is told about ``spec``'s backbone, from its architecture alone; None
    where the server cannot read the architecture (a served runtime, an unknown name)."""
    files = (spec.artifact, spec.verify_key)
    return _interface(
        spec.name,
        spec.level,
        spec.artifact,
        spec.verify_key,
        spec.runtime,
        stamps=tuple(_stamp(f) for f in files),
    )


@functools.lru_cache(maxsize=8)
def _interface(
    name: str,
    level: str,
    artifact: str | None,
    verify_key: str | None,
    runtime: str | None,
    *,
    stamps: tuple[tuple[int, int, int] | None, ...],
) -> BackboneInterface | None:
    """:func:`published_interface` of these backbone settings (``stamps``: their files as
    they are now, so that a replaced file is read again)."""
    model_config = _model_config(name, artifact, verify_key, runtime)
    if model_config is None:
        return None
    with torch.device("meta"):
        model = architecture(model_config)
    access, shapes = AccessLevel(level), families.describe(model)
    return BackboneInterface(
        name=name,
        level=access,
        image_size=shapes.image_size,
        embed_dim=shapes.embed_dim,
        context_length=shapes.context_length,
        token_width=shapes.token_width,
        logit_scale=float("nan"),  # a weight (see the module doc)
        parameter_count=sum(p.numel() for p in model.parameters()),
        vocab_size=shapes.vocab_size,
        entry_points=entry_points(model) if access.entry_points else (),
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
