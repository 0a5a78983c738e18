"""The owner's revocation list: artifact ids a site must no longer open, signed.

An artifact that leaked, or was replaced because it was wrong, stays valid under the
owner's signature for good; the list names it, and ``load_artifact`` refuses what it
names. The list is signed with the owner's Ed25519 key, so a site verifies it with the
key it already holds, and nobody else can shorten it. Layout::

    magic (8 bytes) | body length (u32, big-endian) | body (JSON) | Ed25519 signature (64)

with the body ``{"revoked": [artifact ids, sorted], "issued_at": ISO time}``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from fedgray.backbone.keys import ArtifactError, read_verify_key

MAGIC = b"FGREVOK1"
LENGTH = struct.Struct(">I")
SIGNATURE_BYTES = 64


def read_revocations(path: str | Path, *, verify_key: str | Path) -> frozenset[str]:
    """The artifact ids the owner revoked, from a list verified with ``verify_key``."""
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the revocation list ({error.strerror})") from None
    head = len(MAGIC) + LENGTH.size
    if blob[: len(MAGIC)] != MAGIC or len(blob) < head + SIGNATURE_BYTES:
        raise ArtifactError(f"{path}: not a fedgray revocation list")
    (length,) = LENGTH.unpack_from(blob, len(MAGIC))
    body, signature = blob[head : head + length], blob[head + length :]
    try:
        if len(body) != length:
            raise InvalidSignature
        read_verify_key(verify_key).verify(signature, body)
    except InvalidSignature:
        raise ArtifactError(
            f"{path}: the revocation list's signature does not verify with {verify_key} "
            "(altered, or not the owner's)"
        ) from None
    try:
        revoked = json.loads(body)["revoked"]
        if not isinstance(revoked, list) or not all(isinstance(i, str) for i in revoked):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path}: the signed revocation list is malformed") from None
    return frozenset(revoked)
