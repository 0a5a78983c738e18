"""The owner's revocation list: artifact ids a site must no longer open, signed.

An artifact that leaked, or was replaced because it was wrong, stays valid under the
owner's signature for good; the list names it, and ``load_artifact`` refuses what it
names. The list is signed with the owner's Ed25519 key, so a site verifies it with the
key it already holds, and nobody else can shorten it. Layout::

    magic (8 bytes) | body length (u32, big-endian) | body (JSON) | Ed25519 signature (64)

with the body ``{"revoked": [artifact ids, sorted], "serial": N, "issued_at": ISO time}``.

Every list the owner issues has a higher ``serial`` than the one before. A site keeps the
highest serial it has seen of each owner (in its cache dir, ``revocation-serials.json``)
and refuses a list with a lower one: an older list, validly signed before an id was added,
cannot be replayed to a site that has seen a newer one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedgray.backbone.keys import ArtifactError, read_verify_key
from fedgray.paths import cache_dir

MAGIC = b"FGREVOK1"
LENGTH = struct.Struct(">I")
SIGNATURE_BYTES = 64


def read_revocations(path: str | Path, *, verify_key: str | Path) -> frozenset[str]:
    """The artifact ids the owner revoked, from a list verified with ``verify_key`` whose
    serial is at least the highest this site has seen of that owner (then recorded)."""
    key = read_verify_key(verify_key)
    body = read_body(Path(path), key, str(verify_key))
    _check_serial(Path(path), body["serial"], key)
    return frozenset(body["revoked"])


def read_body(path: Path, key: Ed25519PublicKey, key_name: str) -> dict[str, Any]:
    """The verified body of the list at ``path``: revoked ids and serial, type-checked."""
    try:
        blob = path.read_bytes()
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
        key.verify(signature, body)
    except InvalidSignature:
        raise ArtifactError(
            f"{path}: the revocation list's signature does not verify with {key_name} "
            "(altered, or not the owner's)"
        ) from None
    try:
        parsed = json.loads(body)
        revoked, serial = parsed["revoked"], parsed["serial"]
        if not isinstance(revoked, list) or not all(isinstance(i, str) for i in revoked):
            raise TypeError
        if type(serial) is not int or serial < 1:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(
            f"{path}: the signed revocation list is malformed (ids and a serial expected)"
        ) from None
    return {"revoked": revoked, "serial": serial}


def _check_serial(path: Path, serial: int, key: Ed25519PublicKey) -> None:
    """Refuse ``serial`` below the highest recorded for the owner of ``key``; record it
    when higher. Under a lock: processes loading at once never lower the record."""
    owner = hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    record = cache_dir() / "revocation-serials.json"
    try:
        highest = _record_highest(record, owner, serial)
    except (OSError, ValueError) as error:
        raise ArtifactError(
            f"{path}: cannot keep the highest revocation list serial seen in {record} ({error})"
        ) from None
    if serial < highest:
        raise ArtifactError(
            f"{path}: revocation list serial {serial} is older than serial {highest}, which "
            "this site has seen (a replayed list); refused"
        )


def _record_highest(record: Path, owner: str, serial: int) -> int:
    """The highest serial of ``owner`` in ``record`` before ``serial``, which is recorded
    when higher."""
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seen = json.loads(record.read_text()) if record.exists() else {}
        highest = int(seen.get(owner, 0))
        if serial > highest:
            seen[owner] = serial
            with tempfile.NamedTemporaryFile(
                "w", dir=record.parent, suffix=".tmp", delete=False
            ) as handle:
                json.dump(seen, handle)
            os.replace(handle.name, record)
        return highest
