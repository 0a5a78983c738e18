"""Model bundles (``fedgray export``): a run's adapters and its facts, signed by the exporter.

A bundle is a folder:

- ``bundle.json``: the resolved config, the backbone's identity (its weights' hash and
  version, never the weights), the adapters' SHA-256, the privacy ledger's summary, the
  metrics and the data description;
- ``bundle.sig``: an Ed25519 signature over ``bundle.json``'s exact bytes, made with a key
  the exporter chooses (``fedgray keys`` makes one);
- ``adapters.pt``: the global adapters, bound to the signature by their hash, and with
  ``--personal`` a site's own personal adapters, ``personal.pt``, bound the same way;
  with ``--personal-only`` the bundle holds ``personal.pt`` alone and names the global
  adapters it goes over by their hash (``adapters.file`` null): a site hands on what is
  its own without the federation's part, and the receiver pairs it with the run or bundle
  of those very global adapters (``--personal BUNDLE``), any other being refused;
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
from dataclasses import replace
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
    config_for_use,
    personal_file,
    read_run,
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


def export(
    run_dir: Path,
    out: Path,
    *,
    signing_key: Path,
    personal: Path | None = None,
    personal_only: bool = False,
) -> Path:
    """Write the bundle of the finished run in ``run_dir`` to ``out`` (a new folder).

    Everything is checked and written in a temporary folder beside ``out`` first, then
    renamed: a failed export leaves no partial bundle, and an existing ``out`` is refused.
    ``personal``: the exporting site's state folder, whose personal adapters join the
    bundle; ``personal_only``: they alone, without the global adapters.
    """
    if personal_only and personal is None:
        raise ValueError("--personal-only: give the site's state folder with --personal")
    if out.exists():
        raise ValueError(f"{out}: exists; refusing to overwrite it")
    key = read_signing_key(signing_key)
    model = read_run(run_dir, [])
    adapters = None if personal_only else (run_dir / ADAPTERS).read_bytes()
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
        "adapters": {
            "file": None if adapters is None else ADAPTERS,
            "sha256": model.adapters_sha256,
            "meta": model.meta,
        },
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
        if adapters is not None:
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
        if part is None or part["file"] is None:  # a personal-only bundle's global adapters
            continue
        path = bundle / part["file"]
        if not path.is_file() or _sha256(path.read_bytes()) != part["sha256"]:
            raise ValueError(f"{bundle}: {path.name} does not match the signed hash (altered)")
    return manifest


def read_bundle(bundle: Path, overrides: list[str], *, verify_key: Path | None) -> TrainedModel:
    """The verified bundle's adapters and config, with the site's ``overrides``."""
    manifest = _verified(bundle, verify_key)
    if manifest["adapters"]["file"] is None:
        raise ValueError(
            f"{bundle}: holds a site's personal adapters only; give the run or bundle of "
            "its global adapters as the source and this bundle as --personal"
        )
    saved = manifest["config"]
    config = config_for_use(saved, overrides, bundle)
    state, meta = load_adapters(bundle / ADAPTERS, backbone=saved["backbone"]["name"])
    if manifest.get("personal") is not None:  # verified above, with the global adapters
        state.update(_load_personal(bundle))
    facts = {key: manifest[key] for key in ("metrics", "privacy", "data", "records", "backbone")}
    digest = manifest["adapters"]["sha256"]
    return TrainedModel(config, state, meta, manifest["kind"], facts, bundle, digest)


def _verified(bundle: Path, verify_key: Path | None) -> dict[str, Any]:
    if verify_key is None:
        raise ValueError(f"{bundle}: a bundle is verified on load: give --verify-key")
    return verified_manifest(bundle, verify_key=verify_key)


def _load_personal(bundle: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(bundle / PERSONAL, map_location="cpu", weights_only=True))


def with_personal_bundle(
    model: TrainedModel, bundle: Path, *, verify_key: Path | None
) -> TrainedModel:
    """``model`` with the personal adapters of the verified ``bundle`` over its global ones;
    refused with one line unless the bundle names these very global adapters."""
    manifest = _verified(bundle, verify_key)
    if manifest.get("personal") is None:
        raise ValueError(f"{bundle}: holds no personal adapters")
    if manifest["adapters"]["sha256"] != model.adapters_sha256:
        raise ValueError(
            f"{bundle}: its personal adapters go over the global adapters with SHA-256 "
            f"{manifest['adapters']['sha256'][:16]}..., not {model.origin}'s "
            f"({model.adapters_sha256[:16]}...)"
        )
    return replace(model, state={**model.state, **_load_personal(bundle)})


def open_source(
    path: Path,
    overrides: list[str],
    *,
    verify_key: Path | None,
    personal: Path | None = None,
    personal_verify_key: Path | None = None,
) -> TrainedModel:
    """A run folder or a bundle, whichever ``path`` is; with ``personal``, a site's state
    folder or personal bundle (verified with ``personal_verify_key``, by default
    ``verify_key``) whose personal adapters go over the global ones."""
    model = (
        read_bundle(path, overrides, verify_key=verify_key)
        if is_bundle(path)
        else read_run(path, overrides)
    )
    if personal is None:
        return model
    if is_bundle(personal):
        key = personal_verify_key or verify_key
        return with_personal_bundle(model, personal, verify_key=key)
    return with_personal(model, personal)
