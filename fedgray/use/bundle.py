"""Model bundles (``fedgray export``): a run's adapters and its facts, signed by the exporter.

A bundle is a folder:

- ``bundle.json``: the resolved config, the backbone's identity (its weights' hash and
  version, never the weights), the adapters' SHA-256, the privacy ledger's summary, the
  metrics and the data description;
- ``bundle.sig``: an Ed25519 signature over ``bundle.json``'s exact bytes, made with a key
  the exporter chooses (``fedgray keys`` makes one);
- ``adapters.pt``: the global adapters, bound to the signature by their hash, and with
  ``--personal`` a site's own personal adapters, ``personal.pt``, bound the same way;
- ``MODEL_CARD.md``: the same facts for people (:mod:`fedgray.use.card`; not signed:
  regenerate it from ``bundle.json`` to trust it).

Loading verifies the signature with the verification key the user names, then the
adapters' hash, before anything is read from either: an altered byte is refused with one
line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fedgray.backbone.keys import read_signing_key, read_verify_key
from fedgray.runs import load_adapters
from fedgray.use.card import model_card
from fedgray.use.facts import run_facts
from fedgray.use.source import (
    TrainedModel,
    backbone_identity,
    personal_file,
    read_run,
    site_config,
    with_personal,
)

BUNDLE_FORMAT = "fedgray-bundle/1"
MANIFEST, SIGNATURE, ADAPTERS, CARD = "bundle.json", "bundle.sig", "adapters.pt", "MODEL_CARD.md"
PERSONAL = "personal.pt"


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a bundle folder (rather than a run folder)."""
    return (path / MANIFEST).is_file()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export(run_dir: Path, out: Path, *, signing_key: Path, personal: Path | None = None) -> Path:
    """Write the bundle of the finished run in ``run_dir`` to ``out`` (a new folder).

    Everything is checked and written in a temporary folder beside ``out`` first, then
    renamed: a failed export leaves no partial bundle, and an existing ``out`` is refused.
    ``personal``: the exporting site's state folder, whose personal adapters join the bundle.
    """
    if out.exists():
        raise ValueError(f"{out}: exists; refusing to overwrite it")
    key = read_signing_key(signing_key)
    model = read_run(run_dir, [])
    adapters = (run_dir / ADAPTERS).read_bytes()
    own = personal_file(model, personal).read_bytes() if personal is not None else None
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    facts = run_facts(run_dir)
    manifest = {
        "format": BUNDLE_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "signer_sha256": _sha256(public),
        "kind": facts["kind"],
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
        "backbone": backbone_identity(model.config),
        "adapters": {"file": ADAPTERS, "sha256": _sha256(adapters), "meta": model.meta},
        "personal": None if own is None else {"file": PERSONAL, "sha256": _sha256(own)},
        "metrics": facts["metrics"],
        "privacy": facts["privacy"],
        "data": facts["data"],
        "records": facts["records"],
    }
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / MANIFEST).write_bytes(raw)
        (staging / SIGNATURE).write_bytes(key.sign(raw))
        (staging / ADAPTERS).write_bytes(adapters)
        if own is not None:
            (staging / PERSONAL).write_bytes(own)
        (staging / CARD).write_text(model_card(manifest))
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def verified_manifest(bundle: Path, *, verify_key: Path) -> dict[str, Any]:
    """``bundle.json`` of ``bundle``, once its signature and the adapters' hash verify."""
    try:
        raw, signature = (bundle / MANIFEST).read_bytes(), (bundle / SIGNATURE).read_bytes()
    except FileNotFoundError as error:
        raise ValueError(
            f"{bundle}: not a signed bundle (no {Path(error.filename).name})"
        ) from None
    try:
        read_verify_key(verify_key).verify(signature, raw)
    except InvalidSignature:
        raise ValueError(
            f"{bundle}: signature does not verify with {verify_key} "
            "(the bundle was altered or signed by another key)"
        ) from None
    manifest = json.loads(raw)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{bundle}: bundle format {manifest.get('format')!r}, not {BUNDLE_FORMAT}")
    for part in (manifest["adapters"], manifest.get("personal")):
        if part is None:
            continue
        path = bundle / part["file"]
        if not path.is_file() or _sha256(path.read_bytes()) != part["sha256"]:
            raise ValueError(f"{bundle}: {path.name} does not match the signed hash (altered)")
    return manifest


def read_bundle(bundle: Path, overrides: list[str], *, verify_key: Path | None) -> TrainedModel:
    """The verified bundle's adapters and config, with the site's ``overrides``."""
    if verify_key is None:
        raise ValueError(f"{bundle}: a bundle is verified on load: give --verify-key")
    manifest = verified_manifest(bundle, verify_key=verify_key)
    saved = manifest["config"]
    config = site_config(saved, overrides, bundle)
    state, meta = load_adapters(bundle / ADAPTERS, backbone=saved["backbone"]["name"])
    if manifest.get("personal") is not None:  # verified above, with the global adapters
        state.update(torch.load(bundle / PERSONAL, map_location="cpu", weights_only=True))
    facts = {key: manifest[key] for key in ("metrics", "privacy", "data", "records", "backbone")}
    return TrainedModel(config, state, meta, manifest["kind"], facts, bundle)


def open_source(
    path: Path, overrides: list[str], *, verify_key: Path | None, personal: Path | None = None
) -> TrainedModel:
    """A run folder or a bundle, whichever ``path`` is; with ``personal``, a site's state
    folder whose personal adapters go over the global ones."""
    model = (
        read_bundle(path, overrides, verify_key=verify_key)
        if is_bundle(path)
        else read_run(path, overrides)
    )
    return model if personal is None else with_personal(model, personal)
