"""Sealing: the owner writes a backbone as one artifact file, its manifest signed and its
weights encrypted under a key of its own, wrapped under the owner's content key.

The file's layout and how a site opens it are the seal's (:mod:`fedgray.backbone.artifact`);
this module holds the half only the owner runs, with the signing key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from torch import nn

from fedgray.backbone.access import AccessLevel
from fedgray.backbone.artifact import FORMAT_VERSION, HEADER, MAGIC, NONCE_BYTES, Manifest
from fedgray.backbone.keys import (
    CONTENT_KEY_BYTES,
    ArtifactError,
    read_content_key,
    read_signing_key,
)
from fedgray.backbone.loading import open_clip_module
from fedgray.backbone.sealed import entry_points as sealed_entry_points
from fedgray.owner.keys import write_content_key


def _model_config(model: nn.Module, name: str) -> dict[str, Any]:
    model_cfg = open_clip_module().get_model_config(name)
    if model_cfg is None:
        raise ArtifactError(f"unknown open_clip model '{name}'")
    preprocess = getattr(model.visual, "preprocess_cfg", None) or {}
    return json.loads(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))


def seal(
    model: nn.Module,
    out: str | Path,
    *,
    name: str,
    level: AccessLevel | str,
    signing_key: Ed25519PrivateKey | str | Path,
    content_key: bytes | str | Path,
    version: int = 1,
    artifact_key: str | Path | None = None,
) -> Manifest:
    """Write ``model`` (the open_clip model ``name``) as a sealed artifact at ``out``.

    The keys: as read by :func:`~fedgray.backbone.keys.read_signing_key` and
    :func:`~fedgray.backbone.keys.read_content_key`, or the paths of their files.
    ``version``: the owner's number for this artifact (1 or more; sites pin the lowest
    they accept). ``artifact_key``: a new file to write this artifact's own key to (it
    opens this artifact and no other), for the sites.
    """
    level = AccessLevel(level)
    if version < 1:
        raise ArtifactError(f"version: must be 1 or more, got {version}")
    if artifact_key is not None and Path(artifact_key).exists():
        raise ArtifactError(f"{artifact_key}: key file exists; refusing to overwrite it")
    if not isinstance(signing_key, Ed25519PrivateKey):
        signing_key = read_signing_key(signing_key)
    if not isinstance(content_key, bytes):
        content_key = read_content_key(content_key)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    entry_points = tuple(
        {"tower": p.tower, "layers": p.layers, "width": p.width}
        for p in (sealed_entry_points(model) if level.entry_points else ())
    )
    manifest = Manifest(
        name=name,
        model_config=_model_config(model, name),
        level=level,
        entry_points=entry_points,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        format_version=FORMAT_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        artifact_id=os.urandom(16).hex(),
        version=version,
    )
    raw = manifest.to_bytes()
    own_key = AESGCM.generate_key(bit_length=8 * CONTENT_KEY_BYTES)
    wrap_nonce, nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    wrapped = AESGCM(content_key).encrypt(wrap_nonce, own_key, raw)
    ciphertext = AESGCM(own_key).encrypt(nonce, weights, raw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tmp", delete=False) as handle:
        handle.write(HEADER.pack(MAGIC, FORMAT_VERSION, len(raw)))
        handle.write(raw + signing_key.sign(raw) + wrap_nonce + wrapped + nonce + ciphertext)
    os.replace(handle.name, out)
    if artifact_key is not None:
        write_content_key(artifact_key, own_key)
    return manifest
