"""The fedgray Flower app as ``flwr run`` submits it, and its run config from a fedgray Config.

``flwr run`` accepts only run-config keys that ``[tool.flwr.app.config]`` declares, so the
overrides are every declared key with the value the resolved Config holds (lists as
comma-separated strings, None as an empty string, as :mod:`fedgray.fl.run_config` reads
them back). Settings the app does not declare cannot travel this way.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import fedgray
from fedgray.config import Config


class AppError(RuntimeError):
    """The Flower app (a fedgray source checkout with its pyproject.toml) is not found."""


def app_dir() -> Path:
    """The folder ``flwr run`` packages: the fedgray checkout holding ``[tool.flwr.app]``."""
    root = Path(fedgray.__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    if not project.is_file() or "tool.flwr.app" not in project.read_text(encoding="utf-8"):
        raise AppError(f"{project}: no Flower app here; deploy from a fedgray source checkout")
    return root


def declared_keys(root: Path) -> list[str]:
    """The run-config keys the app declares (dotted, as written in pyproject.toml)."""
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    flat: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat.append(f"{prefix}{key}")

    walk(data["tool"]["flwr"]["app"]["config"], "")
    return flat


def _lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.replace("-", "_").split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(",".join(str(v) for v in value))
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config_overrides(config: Config, root: Path) -> str:
    """``--run-config``'s value carrying ``config`` through every key the app declares."""
    data = config.to_dict()
    pairs = []
    for key in declared_keys(root):
        found, value = _lookup(data, key)
        if found:
            pairs.append(f"{key}={_toml(value)}")
    return " ".join(pairs)


def undeclared_settings(config: Config, root: Path) -> list[str]:
    """Settings of ``config`` that differ from the defaults but that no declared key carries
    (they would silently not reach the app)."""
    declared = {k.replace("-", "_") for k in declared_keys(root)}
    lost: list[str] = []

    def walk(ours: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
        for key, value in ours.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, defaults.get(key, {}), f"{dotted}.")
            elif value != defaults.get(key) and dotted not in declared:
                lost.append(dotted)

    walk(config.to_dict(), Config().to_dict(), "")
    return lost
