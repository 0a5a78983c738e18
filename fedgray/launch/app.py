"""The app folder ``flwr run`` submits (``fedgray run``, a deployment): one run config.

``flwr run`` takes only run-config keys that the app's ``[tool.flwr.app.config]`` declares.
Rather than a fixed subset, :func:`write_app` writes an app folder whose pyproject.toml
declares the whole resolved fedgray Config (the same YAML ``fedgray run`` reads, plus
overrides), as dotted keys that :func:`fedgray.fl.run_config.resolve_config` reads back:
lists as comma-separated strings, None as an empty string. The app's code is the installed
fedgray package (runtime dependency installation is disabled on every machine, so each
machine has fedgray installed, at the same version): the FAB that travels holds only this
pyproject.toml, never a site's paths or keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fedgray
from fedgray.config import Config, save_config

SERVER_APP = "fedgray.fl.serverapp.app:app"
CLIENT_APP = "fedgray.fl.clientapp.app:app"


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(",".join(str(v) for v in value))
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def flat_config(config: Config) -> dict[str, str]:
    """Every leaf of ``config`` as ``dotted.key -> TOML value`` (empty mappings dropped)."""
    flat: dict[str, str] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = _toml(value)

    walk(config.to_dict(), "")
    return flat


def write_app(config: Config, app_dir: Path) -> Path:
    """Write the app folder ``flwr run`` packages: pyproject.toml (the apps and ``config``
    as their run config) and, for the operator's record, ``config.yaml``."""
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
        *(f"{key} = {value}" for key, value in flat_config(config).items()),
        "",
    ]
    (app_dir / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    save_config(config, app_dir / "config.yaml")
    return app_dir
