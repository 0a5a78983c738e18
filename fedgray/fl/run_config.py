"""The Config a ServerApp or ClientApp runs, from Flower's ``context.run_config``.

The YAML config is the one source of options and defaults, under ``fedgray run`` and
``flwr run`` alike. The run config holds at most three keys:

- ``document``: the whole resolved config as one JSON document
  (:func:`fedgray.config.to_document`), what the app folder of ``fedgray run`` and of a
  deployment declares (:mod:`fedgray.launch.app_folder`); it is parsed and checked once per
  process;
- ``config``: a YAML file (absolute, or relative to the working directory or to the app's
  folder), what the repository's own pyproject.toml declares for ``flwr run .``; empty: the
  factory's config, or the defaults;
- ``overrides``: ``--set``-style ``section.key=value`` items separated by spaces (shell
  quoting for values with spaces), parsed by the same code as ``fedgray --set`` and applied
  last, e.g. ``flwr run . --run-config 'overrides="federation.num_rounds=2"'``.

Any other key is refused in one line. Under an in-process grid the run config is empty and
the factory's config is used as it is.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fedgray
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.resolver import config_from_dict, load_config, resolve_document
from fedgray.train.kinds import refuse_unsupported

DOCUMENT_KEY, CONFIG_KEY, OVERRIDES_KEY = "document", "config", "overrides"
APP_DIR = Path(fedgray.__file__).resolve().parents[1]  # the app's folder (pyproject.toml's)


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


def _base(config: Config | None, document: str, name: str) -> Config:
    """The config before overrides: the document, else the YAML file, else the factory's
    config, else the defaults."""
    if document and name:
        raise ConfigError(f"{CONFIG_KEY}: the run config holds a {DOCUMENT_KEY} already")
    if document:
        return resolve_document(document)
    if name:
        return load_config(config_path(name))
    return config if config is not None else Config()


def resolve_config(config: Config | None, run_config: Mapping[str, Any]) -> Config:
    """The config a ServerApp or ClientApp runs (see the module docstring), refused where its
    method's trainer kind refuses one of its federated settings
    (:data:`fedgray.train.kinds.TrainerKind.refusals`)."""
    entries = dict(run_config)
    document = str(entries.pop(DOCUMENT_KEY, "") or "")
    name = str(entries.pop(CONFIG_KEY, "") or "")
    overrides = split_overrides(str(entries.pop(OVERRIDES_KEY, "") or ""))
    if entries:
        known = ", ".join((DOCUMENT_KEY, CONFIG_KEY, OVERRIDES_KEY))
        raise ConfigError(
            f"{next(iter(entries))}: not a run-config key of fedgray (known: {known})"
        )
    base = _base(config, document, name)
    if overrides:
        base = config_from_dict(base.to_dict(), overrides)
    return refuse_unsupported(base)
