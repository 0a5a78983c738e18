"""A fedgray Config from a factory's config plus Flower's ``context.run_config``.

The YAML config is the one source of options and defaults, under ``fedgray run`` and
``flwr run`` alike. Under ``flwr run`` the run config holds the ``[tool.flwr.app.config]``
keys of pyproject.toml (and ``--run-config`` overrides):

- ``config``: the YAML file (absolute, or relative to the working directory or to the app's
  folder); empty: the factory's config, or the defaults;
- ``overrides``: ``--set``-style ``section.key=value`` items separated by spaces (shell
  quoting for values with spaces), parsed by the same code as ``fedgray --set``, e.g.
  ``flwr run . --run-config 'overrides="federation.num_rounds=2 train.lr=0.01"'``.

Any other key is a dotted config path (``federation.num-rounds``, dashes or underscores)
set on top; since run-config values are scalars, lists take comma-separated strings and an
empty string means None (the flat form a deployment's app writes, see
:mod:`fedgray.launch.app`). Under ``run_simulation`` the run config is empty and the
factory's config is used as it is.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fedgray
from fedgray.config import Config
from fedgray.config_schema import ConfigError, get_dotted, set_dotted
from fedgray.resolver import config_from_dict, load_config
from fedgray.train.kinds import refuse_unsupported

CONFIG_KEY, OVERRIDES_KEY = "config", "overrides"
APP_DIR = Path(fedgray.__file__).resolve().parents[1]  # the app's folder (pyproject.toml's)


def require_federated_method(config: Config) -> Config:
    """``config``, unless its method's trainer kind refuses one of its federated settings
    (:data:`fedgray.train.kinds.TrainerKind.refusals`)."""
    return refuse_unsupported(config)


def config_path(name: str) -> Path:
    """The YAML file ``name``: as given when it exists, else relative to the app's folder."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return APP_DIR / path


def split_overrides(text: str) -> list[str]:
    """``'a.b=1 c.d="x y"'`` -> ``['a.b=1', 'c.d=x y']`` (each then parsed as ``--set``)."""
    try:
        return shlex.split(text)
    except ValueError as error:
        raise ConfigError(f"{OVERRIDES_KEY}: cannot split {text!r} ({error})") from None


def resolve_config(config: Config | None, run_config: Mapping[str, Any]) -> Config:
    """The config a ServerApp or ClientApp runs: the YAML named by ``config`` (else the
    factory's ``config``, else the defaults), then dotted keys, then ``overrides``; checked
    by :func:`require_federated_method`."""
    entries = dict(run_config)
    name = str(entries.pop(CONFIG_KEY, "") or "")
    overrides = split_overrides(str(entries.pop(OVERRIDES_KEY, "") or ""))
    base = load_config(config_path(name)) if name else config if config is not None else Config()
    if not entries and not overrides:
        return require_federated_method(base)
    data = base.to_dict()
    for key, value in entries.items():
        path = key.replace("-", "_")
        if isinstance(get_dotted(data, path), list) and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif value == "":
            value = None
        set_dotted(data, path, value)
    return require_federated_method(config_from_dict(data, overrides))
