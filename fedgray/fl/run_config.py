"""A fedgray Config from a factory's config plus Flower's ``context.run_config``.

Under ``flwr run`` the run config holds the ``[tool.flwr.app.config]`` keys of pyproject.toml
(and ``--run-config`` overrides): dotted config paths such as ``federation.num-rounds``
(dashes or underscores). Under ``run_simulation`` it is empty and the factory's config is used.
List fields take comma-separated strings, since run-config values are scalars; an empty
string elsewhere means None (TOML has no null).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedgray.config import Config
from fedgray.config_schema import build, set_dotted
from fedgray.train.kinds import refuse_unsupported


def _current(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def require_federated_method(config: Config) -> Config:
    """``config``, unless its method's trainer kind refuses one of its federated settings
    (:data:`fedgray.train.kinds.TrainerKind.refusals`)."""
    return refuse_unsupported(config)


def resolve_config(config: Config | None, run_config: Mapping[str, Any]) -> Config:
    """``config`` (defaults when None) with every ``run_config`` entry applied on top,
    checked by :func:`require_federated_method`."""
    base = config if config is not None else Config()
    if not run_config:
        return require_federated_method(base)
    data = base.to_dict()
    for key, value in run_config.items():
        path = key.replace("-", "_")
        if isinstance(_current(data, path), list) and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif value == "":
            value = None
        set_dotted(data, path, value)
    return require_federated_method(build(Config, data))
