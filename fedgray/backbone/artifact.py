"""Sealed artifact files: a signed manifest and AES-GCM encrypted weights, all or nothing.

Layout (integers big-endian)::

    magic (8 bytes) | format version (u16) | manifest length (u32) | manifest (JSON)
    | Ed25519 signature over the manifest bytes (64)
    | nonce (12) | the artifact key wrapped under the content key (AES-GCM, 48)
    | nonce (12) | AES-GCM ciphertext of the weights under the artifact key + tag

The manifest names the open_clip architecture and its config, the access level the owner
grants, its entry points, the SHA-256 of the plaintext weights (``torch.save`` of the
state dict), the format version, the creation time, a random artifact id and the
owner-assigned version. The manifest bytes are the associated data of both ciphertexts,
so weights cannot be moved under another manifest.

Each artifact has its own random key, wrapped under the owner's content key: the owner's
key opens every artifact it sealed, an artifact's own key (``fedgray seal
--artifact-key``, what a site should be given) opens that artifact only. So that a site
cannot be handed an older artifact of the same owner (a rollback), it pins the lowest
version it accepts (``min_version``) and honours the owner's signed revocation list
(:mod:`fedgray.backbone.revocation`); both are checked before anything is decrypted.

Loading checks magic and version, verifies the signature before reading anything else,
checks version and revocation, decrypts, checks the hash, then builds the model from the
manifest and loads the weights strictly. Every failure is one :class:`ArtifactError`
naming the file.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from torch import nn

from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.keys import (
    CONTENT_KEY_BYTES,
    ArtifactError,
    read_content_key,
    read_verify_key,
)
from fedgray.backbone.loading import get_tokenizer, open_clip_module
from fedgray.backbone.revocation import read_revocations
from fedgray.backbone.sealed import SealedBackbone

MAGIC = b"FGSEAL\r\n"
FORMAT_VERSION = 2  # 2: a wrapped key per artifact, an id and a version in the manifest
HEADER = struct.Struct(">8sHI")
SIGNATURE_BYTES = 64
NONCE_BYTES = 12
WRAPPED_BYTES = CONTENT_KEY_BYTES + 16  # the artifact key and its GCM tag
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """The signed description of a sealed backbone."""

    name: str
    model_config: dict[str, Any]
    level: AccessLevel
    entry_points: tuple[dict[str, Any], ...]
    weights_sha256: str
    format_version: int
    created_at: str
    artifact_id: str  # random, what a revocation list names
    version: int  # owner-assigned; a site refuses versions below the one it pins

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (sorted keys), as signed."""
        data = {**asdict(self), "level": self.level.value}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse manifest bytes; raises ValueError, KeyError or TypeError when malformed."""
        data = json.loads(raw)
        entry_points = tuple(dict(e) for e in data["entry_points"])
        return cls(
            name=str(data["name"]),
            model_config=dict(data["model_config"]),
            level=AccessLevel(data["level"]),
            entry_points=entry_points,
            weights_sha256=str(data["weights_sha256"]),
            format_version=int(data["format_version"]),
            created_at=str(data["created_at"]),
            artifact_id=str(data["artifact_id"]),
            version=int(data["version"]),
        )


def architecture(model_config: dict[str, Any]) -> nn.Module:
    """The open_clip model a manifest's ``model_config`` describes, at its initial weights
    (built under ``torch.device("meta")`` it holds shapes only)."""
    open_clip = open_clip_module()
    cfg = copy.deepcopy(model_config["model_cfg"])
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False  # the weights come from the artifact only
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = False
    model_class = open_clip.CLIP
    if cfg.pop("custom_text", False) or "hf_model_name" in text:
        model_class = open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP
    model = model_class(**cfg)
    preprocess = model_config.get("preprocess_cfg") or {}
    if preprocess:
        open_clip.set_model_preprocess_cfg(model, preprocess)
    return model


def _build(manifest: Manifest, weights: bytes) -> nn.Module:
    model = architecture(manifest.model_config)
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def _read(path: Path, verify_key: str | Path) -> tuple[Manifest, bytes, bytes]:
    """Verified manifest, its exact bytes, and the rest (nonce + ciphertext)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact file not found") from None
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the artifact ({error.strerror})") from None
    if len(blob) < HEADER.size or blob[: len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{path}: not a fedgray sealed artifact (bad magic bytes)")
    _, version, length = HEADER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version}; this fedgray reads {FORMAT_VERSION}"
        )
    end = HEADER.size + length
    keys = 2 * NONCE_BYTES + WRAPPED_BYTES
    if length > MAX_MANIFEST_BYTES or len(blob) < end + SIGNATURE_BYTES + keys + 16:
        raise ArtifactError(f"{path}: truncated or damaged artifact (bad section lengths)")
    raw, signature = blob[HEADER.size : end], blob[end : end + SIGNATURE_BYTES]
    try:
        read_verify_key(verify_key).verify(signature, raw)
    except InvalidSignature:
        raise ArtifactError(
            f"{path}: signature does not verify with {verify_key} "
            "(the file was altered or sealed by another owner)"
        ) from None
    try:
        manifest = Manifest.from_bytes(raw)
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path}: the signed manifest is malformed") from None
    if manifest.format_version != version:
        raise ArtifactError(f"{path}: manifest and header disagree on the format version")
    return manifest, raw, blob[end + SIGNATURE_BYTES :]


def read_manifest(path: str | Path, *, verify_key: str | Path) -> Manifest:
    """The verified manifest of the artifact at ``path`` (weights are not decrypted)."""
    return _read(Path(path), verify_key)[0]


def _artifact_key(key: bytes, raw: bytes, sealed: bytes) -> bytes:
    """The artifact's own key: unwrapped when ``key`` is the owner's content key, else
    ``key`` itself (a site given the artifact's key)."""
    wrapped = sealed[NONCE_BYTES : NONCE_BYTES + WRAPPED_BYTES]
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], wrapped, raw)
    except InvalidTag:
        return key


def _unseal(
    path: Path, manifest: Manifest, raw: bytes, sealed: bytes, content_key: str | Path
) -> nn.Module:
    key = _artifact_key(read_content_key(content_key), raw, sealed)
    data = sealed[NONCE_BYTES + WRAPPED_BYTES :]
    try:
        weights = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw)
    except InvalidTag:
        raise ArtifactError(
            f"{path}: the weights do not decrypt with {content_key} (neither the owner's "
            "content key nor this artifact's own key, or the file was altered)"
        ) from None
    if hashlib.sha256(weights).hexdigest() != manifest.weights_sha256:
        raise ArtifactError(f"{path}: the weights do not match the manifest's SHA-256")
    try:
        return _build(manifest, weights)
    except Exception as error:  # noqa: BLE001 - reported as one line naming the file
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ArtifactError(
            f"{path}: the signed manifest and weights do not build a model "
            f"({type(error).__name__}: {detail})"
        ) from None


def _check_current(
    path: Path,
    manifest: Manifest,
    verify_key: str | Path,
    min_version: int | None,
    revocations: str | Path | None,
) -> None:
    """Refuse an artifact older than ``min_version`` or named by the owner's list."""
    if min_version is not None and manifest.version < min_version:
        raise ArtifactError(
            f"{path}: version {manifest.version}, older than the lowest this site accepts "
            f"({min_version}); refused"
        )
    if revocations is not None and manifest.artifact_id in read_revocations(
        revocations, verify_key=verify_key
    ):
        raise ArtifactError(
            f"{path}: artifact {manifest.artifact_id} is revoked by its owner ({revocations})"
        )


def open_artifact(
    path: str | Path,
    *,
    verify_key: str | Path,
    content_key: str | Path,
    min_version: int | None = None,
    revocations: str | Path | None = None,
) -> tuple[Manifest, nn.Module]:
    """Verify, decrypt and build the artifact at ``path``: its manifest and plain model."""
    path = Path(path)
    manifest, raw, sealed = _read(path, verify_key)
    _check_current(path, manifest, verify_key, min_version, revocations)
    return manifest, _unseal(path, manifest, raw, sealed, content_key)


def load_artifact(
    path: str | Path,
    *,
    verify_key: str | Path,
    content_key: str | Path,
    name: str | None = None,
    level: AccessLevel | str | None = None,
    query_budget: int | None = None,
    sample_budget: int | None = None,
    gradient_budget: int | None = None,
    opaque: bool = True,
    device: torch.device | str = "cpu",
    min_version: int | None = None,
    revocations: str | Path | None = None,
) -> SealedBackbone:
    """Open the artifact at ``path`` as a :class:`SealedBackbone`.

    ``level`` (default: the manifest's) may not exceed the level in the signed manifest;
    ``name``, when given, must be the manifest's architecture. ``opaque`` and ``device``:
    see :class:`SealedBackbone` (the isolated runtime passes ``opaque=False``).
    ``min_version``: the lowest owner version accepted; ``revocations``: the owner's
    signed revocation list; both refuse before anything is decrypted.
    """
    path = Path(path)
    manifest, raw, sealed = _read(path, verify_key)
    _check_current(path, manifest, verify_key, min_version, revocations)
    if name is not None and name != manifest.name:
        raise ArtifactError(f"{path}: holds '{manifest.name}', not the configured '{name}'")
    level = manifest.level if level is None else AccessLevel(level)
    if level.rank > manifest.level.rank:
        raise SealedError(
            f"{path}: sealed for level '{manifest.level.value}' at most; "
            f"level '{level.value}' refused"
        )
    return SealedBackbone(
        _unseal(path, manifest, raw, sealed, content_key),
        get_tokenizer(manifest.name, manifest.model_config.get("model_cfg")),
        name=manifest.name,
        level=level,
        query_budget=query_budget,
        sample_budget=sample_budget,
        gradient_budget=gradient_budget,
        opaque=opaque,
        device=device,
    )
