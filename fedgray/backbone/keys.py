"""The model owner's keys: an Ed25519 signing key pair and a 256-bit AES-GCM content key.

Files written by :func:`generate_keys` (never over an existing file):

- ``owner-signing.pem``: the Ed25519 private key (PKCS#8 PEM, mode 0600); stays with the owner.
- ``owner-verify.pem``: the Ed25519 public key (PEM); given to every site.
- ``content.key``: the AES-256 content key, base64 on one line (mode 0600); given to the
  runtime that decrypts the backbone.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SIGNING_KEY_FILE = "owner-signing.pem"
VERIFY_KEY_FILE = "owner-verify.pem"
CONTENT_KEY_FILE = "content.key"
CONTENT_KEY_BYTES = 32


class ArtifactError(ValueError):
    """A sealed artifact or one of its key files is missing, damaged or does not match."""


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
    write_content_key(files.content_key, AESGCM.generate_key(bit_length=256))
    return files


def write_content_key(path: str | Path, key: bytes) -> None:
    """Write an AES-256 key as base64 on one line to the new file ``path`` (mode 0600)."""
    _write_new(Path(path), base64.b64encode(key) + b"\n", mode=0o600)


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {what} file not found") from None
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the {what} file ({error.strerror})") from None


def read_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The owner's Ed25519 private key from a PEM file."""
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"{path}: not an unencrypted Ed25519 private key (PEM)")
    return key


def read_verify_key(path: str | Path) -> Ed25519PublicKey:
    """The owner's Ed25519 public (verification) key from a PEM file."""
    data = _read(path, "verification key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError(f"{path}: not an Ed25519 public key (PEM)")
    return key


def read_content_key(path: str | Path) -> bytes:
    """The 32-byte AES-GCM content key from a base64 file."""
    data = _read(path, "content key")
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != CONTENT_KEY_BYTES:
        raise ArtifactError(f"{path}: not a 256-bit content key (base64 on one line)")
    return key
