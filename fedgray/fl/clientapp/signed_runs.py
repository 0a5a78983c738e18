"""Runs signed by a publisher the site names: the site's pin on who may set its run config.

The trusted runner (:mod:`fedgray.fl.clientapp.trusted`) makes a site run only fedgray's
own ClientApp, but the run config that steers it (method, rounds, privacy settings) is
whatever the submitter sent. A site that names a publisher (``publisher-key`` in its node
config: an Ed25519 public key, PEM) answers only runs whose whole run config, as Flower
hands it to the ClientApp (the app's declared config with the submitter's ``--run-config``
overrides applied), carries that publisher's signature. The signature travels in the app's
pyproject.toml, ``[tool.fedgray] signature``, outside the run config it signs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from fedgray.backbone.keys import read_verify_key

PUBLISHER_KEY = "publisher-key"
"""The node-config key naming the publisher's public key file."""
SIGNATURE_TABLE = "fedgray"  # [tool.fedgray] in the app's pyproject.toml
SIGNATURE = "signature"


def signed_bytes(run_config: Mapping[str, Any]) -> bytes:
    """The canonical form of a flat run config that a publisher signs and a site verifies:
    sorted JSON, so that Flower re-serialising the pyproject.toml changes nothing."""
    return json.dumps(dict(run_config), sort_keys=True, separators=(",", ":")).encode()


def signature_of(pyproject: Mapping[str, Any]) -> str | None:
    """The signature an app's parsed pyproject.toml carries, if any."""
    table = pyproject.get("tool", {}).get(SIGNATURE_TABLE, {})
    value = table.get(SIGNATURE) if isinstance(table, dict) else None
    return value if isinstance(value, str) else None


def run_verdict(
    pyproject: Mapping[str, Any], run_config: Mapping[str, Any], publisher_key: Path
) -> str | None:
    """Why this run is not the pinned publisher's (None: it is): no signature, or one that
    does not verify over ``run_config`` with ``publisher_key``."""
    signature = signature_of(pyproject)
    if signature is None:
        return (
            "its run config is unsigned; this site runs only runs signed with its "
            f"publisher's key ({publisher_key})"
        )
    key = read_verify_key(publisher_key)
    try:
        key.verify(base64.b64decode(signature, validate=True), signed_bytes(run_config))
    except (InvalidSignature, binascii.Error):
        return (
            f"its run config is not signed with this site's publisher's key ({publisher_key}): "
            "another key signed it, or it changed after signing"
        )
    return None
