"""Reading the model owner's keys: an Ed25519 key pair and a 256-bit AES-GCM content key.

A site verifies artifacts with the owner's public key and its runtime decrypts them with a
content key; the owner writes these files (:mod:`fedgray.owner.keys`). Every failure to
read one is an :class:`ArtifactError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CONTENT_KEY_BYTES = 32


class ArtifactError(ValueError):
    """A sealed artifact or one of its key files is missing, damaged or does not match."""


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
