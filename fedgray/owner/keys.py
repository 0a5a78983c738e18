"""The model owner's keys: an Ed25519 signing key pair and a 256-bit AES-GCM content key.

Files written by :func:`generate_keys` (never over an existing file):

- ``owner-signing.pem``: the Ed25519 private key (PKCS#8 PEM, mode 0600); stays with the owner.
- ``owner-verify.pem``: the Ed25519 public key (PEM); given to every site.
- ``content.key``: the AES-256 content key, base64 on one line (mode 0600); given to the
  runtime that decrypts the backbone.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedgray.backbone.keys import CONTENT_KEY_BYTES, ArtifactError

SIGNING_KEY_FILE = "owner-signing.pem"
VERIFY_KEY_FILE = "owner-verify.pem"
CONTENT_KEY_FILE = "content.key"


@dataclass(frozen=True)
class KeyFiles:
    """Where :func:`generate_keys` wrote the owner's keys."""

    signing_key: Path
    verify_key: Path
    content_key: Path


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ArtifactError(f"{path}: key file exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate_keys(out_dir: str | Path) -> KeyFiles:
    """Create a signing key pair and a content key in ``out_dir``; never overwrites a file."""
    out = Path(out_dir)
    files = KeyFiles(out / SIGNING_KEY_FILE, out / VERIFY_KEY_FILE, out / CONTENT_KEY_FILE)
    for path in (files.signing_key, files.verify_key, files.content_key):
        if path.exists():
            raise ArtifactError(f"{path}: key file exists; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    signing = Ed25519PrivateKey.generate()
    private_pem = signing.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(files.signing_key, private_pem, mode=0o600)
    _write_new(files.verify_key, public_pem, mode=0o644)
    write_content_key(files.content_key, AESGCM.generate_key(bit_length=8 * CONTENT_KEY_BYTES))
    return files


def write_content_key(path: str | Path, key: bytes) -> None:
    """Write an AES-256 key as base64 on one line to the new file ``path`` (mode 0600)."""
    _write_new(Path(path), base64.b64encode(key) + b"\n", mode=0o600)
