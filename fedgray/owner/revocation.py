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

from fedgray.backbone.keys import read_signing_key
from fedgray.backbone.revocation import LENGTH, MAGIC


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
        handle.write(MAGIC + LENGTH.pack(len(body)) + body + signing_key.sign(body))
    os.replace(handle.name, out)
