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
import os
import struct
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgray.backbone.keys import ArtifactError, read_signing_key, read_verify_key

MAGIC = b"FGREVOK1"
_LENGTH = struct.Struct(">I")
SIGNATURE_BYTES = 64


def write_revocations(
    out: str | Path, revoked: Iterable[str], *, signing_key: Ed25519PrivateKey | str | Path
) -> None:
    """Write the signed list of ``revoked`` artifact ids to ``out`` (replaced whole)."""
    if not isinstance(signing_key, Ed25519PrivateKey):
        signing_key = read_signing_key(signing_key)
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    body = json.dumps(
        {"revoked": sorted(set(revoked)), "issued_at": issued}, separators=(",", ":")
    ).encode()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tmp", delete=False) as handle:
        handle.write(MAGIC + _LENGTH.pack(len(body)) + body + signing_key.sign(body))
    os.replace(handle.name, out)


def read_revocations(path: str | Path, *, verify_key: str | Path) -> frozenset[str]:
    """The artifact ids the owner revoked, from a list verified with ``verify_key``."""
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the revocation list ({error.strerror})") from None
    head = len(MAGIC) + _LENGTH.size
    if blob[: len(MAGIC)] != MAGIC or len(blob) < head + SIGNATURE_BYTES:
        raise ArtifactError(f"{path}: not a fedgray revocation list")
    (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
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
