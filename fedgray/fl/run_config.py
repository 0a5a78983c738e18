"""A fedgray Config from a factory's config plus Flower's ``context.run_config``.

Under ``flwr run`` the run config holds the ``[tool.flwr.app.config]`` keys of pyproject.toml
(and ``--run-config`` overrides): dotted config paths such as ``federation.num-rounds``
(dashes or underscores). Under ``run_simulation`` it is empty and the factory's config is used.
List fields take comma-separated strings, since run-config values are scalars; an empty
string elsewhere means None (TOML has no null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fedgray.adapters.methods import METHODS
from fedgray.config import Config
from fedgray.config_schema import ConfigError, build, set_dotted


def _current(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


# What federated CraFT does not support: (the config field, is it set, why not).
CRAFT_REFUSALS: tuple[tuple[str, Callable[[Config], bool], str], ...] = (
    ("train.task", lambda c: c.train.task != "classification", "CraFT classifies only"),
    (
        "federation.strategy",
        lambda c: c.federation.strategy != "fedavg",
        "federated CraFT averages the search distributions: fedavg only",
    ),
    ("privacy.enabled", lambda c: c.privacy.enabled, "DP-SGD needs gradients; CraFT has none"),
    (
        "privacy.central.enabled",
        lambda c: c.privacy.central.enabled,
        "clipping a search distribution's update is not supported",
    ),
    (
        "federation.secure_aggregation.enabled",
        lambda c: c.federation.secure_aggregation.enabled,
        "SecAgg+ with CraFT is not supported",
    ),
    (
        "federation.personal",
        lambda c: bool(c.federation.personal),
        "CraFT has no personal adapters",
    ),
)


def require_federated_method(config: Config) -> Config:
    """``config``, if sites can federate its method: gradient-trained methods, and CraFT
    (:mod:`fedgray.fl.craft_site`) without the settings in :data:`CRAFT_REFUSALS`."""
    method = METHODS.get(config.method.name)
    if method is None or method.trainer == "gradient":
        return config
    if method.trainer != "craft":
        raise ConfigError(
            f"method.name: '{method.name}' trains with its '{method.trainer}' trainer, which "
            "runs in fedgray adapt only; federated runs take gradient-trained methods and craft"
        )
    for field_name, refused, reason in CRAFT_REFUSALS:
        if refused(config):
            raise ConfigError(f"{field_name}: not with method 'craft' in federated runs ({reason})")
    return config


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
