"""The publisher's signature on a deployed run: the operator signs the app's run config, and
sites that pin the publisher's key run nothing else (:mod:`fedgray.fl.clientapp.signed_runs`)."""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path

from flwr.common.config import flatten_dict

from fedgray.backbone.keys import read_signing_key
from fedgray.fl.clientapp.signed_runs import SIGNATURE, SIGNATURE_TABLE, signed_bytes


def sign_app(app_dir: Path, signing_key: Path) -> None:
    """Sign the app's run config with the publisher's Ed25519 key (sites that pin its
    public key run nothing else; see :mod:`fedgray.fl.clientapp.signed_runs`): over the
    config as Flower will hand it to the ClientApp, flattened, in the form sites check."""
    key = read_signing_key(signing_key)
    path = app_dir / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    run_config = flatten_dict(tomllib.loads(text)["tool"]["flwr"]["app"]["config"])
    signature = base64.b64encode(key.sign(signed_bytes(run_config))).decode()
    path.write_text(
        f'{text}\n[tool.{SIGNATURE_TABLE}]\n{SIGNATURE} = "{signature}"\n', encoding="utf-8"
    )
