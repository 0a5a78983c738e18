"""Revoking artifacts: the owner's signed list of artifact ids sites must no longer open.

The list's layout and how a site checks it are the seal's (:mod:`fedgray.backbone.revocation`);
only the owner, with the signing key, writes one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgray.backbone.keys import ArtifactError, read_signing_key
from fedgray.backbone.revocation import LENGTH, MAGIC, read_body


def write_revocations(
    out: str | Path,
    revoked: Iterable[str],
    *,
    signing_key: Ed25519PrivateKey | str | Path,
    serial: int | None = None,
) -> int:
    """Write the signed list of ``revoked`` artifact ids to ``out`` (replaced whole); its
    serial: ``serial``, by default one more than the list ``out`` holds (1 if none)."""
    if not isinstance(signing_key, Ed25519PrivateKey):
        signing_key = read_signing_key(signing_key)
    out = Path(out)
    if serial is None:
        key = signing_key.public_key()
        serial = 1 + (read_body(out, key, "this signing key")["serial"] if out.exists() else 0)
    if serial < 1:
        raise ArtifactError(f"--serial {serial}: must be at least 1")
    issued = datetime.now(UTC).isoformat(timespec="seconds")
    body = json.dumps(
        {"revoked": sorted(set(revoked)), "serial": serial, "issued_at": issued},
        separators=(",", ":"),
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".tmp", delete=False) as handle:
        handle.write(MAGIC + LENGTH.pack(len(body)) + body + signing_key.sign(body))
    os.replace(handle.name, out)
    return serial
