"""The app folder ``flwr run`` submits (``fedgray run``, a deployment): one run config.

``flwr run`` takes only run-config keys that the app's ``[tool.flwr.app.config]`` declares.
:func:`write_app` writes an app folder whose pyproject.toml declares two: ``document``, the
whole resolved fedgray Config (the same YAML ``fedgray run`` reads, plus overrides) as one
typed JSON document (:func:`fedgray.config.to_document`; TOML's basic strings take JSON's
escapes), which each ServerApp and ClientApp process parses and checks once
(:mod:`fedgray.fl.run_config`), and ``overrides``, empty, for ``--set``-style items given
with ``--run-config``. The app's code is the installed
fedgray package (runtime dependency installation is disabled on every machine, so each
machine has fedgray installed, at the same version): the FAB that travels holds only this
pyproject.toml, never a site's paths or keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import fedgray
from fedgray.config import Config, save_config, to_document

SERVER_APP = "fedgray.fl.serverapp.app:app"
CLIENT_APP = "fedgray.fl.clientapp.app:app"


def write_app(config: Config, app_dir: Path) -> Path:
    """Write the app folder ``flwr run`` packages: pyproject.toml (the apps, and ``config``
    as their run config's document) and, for the operator's record, ``config.yaml``."""
    app_dir.mkdir(parents=True, exist_ok=True)
    version = getattr(fedgray, "__version__", "0.1.0")
    lines = [
        "[project]",
        'name = "fedgray"',
        f'version = "{version}"',
        'description = "fedgray on Flower\'s deployment engine (code: the installed package)"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedgray"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVER_APP}"',
        f'clientapp = "{CLIENT_APP}"',
        "",
        "[tool.flwr.app.config]",
        f"document = {json.dumps(to_document(config))}",
        'overrides = ""',
        "",
    ]
    (app_dir / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    save_config(config, app_dir / "config.yaml")
    return app_dir
