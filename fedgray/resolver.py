"""A run configuration with its names checked against the registries that serve them.

The schema (:mod:`fedgray.config`) sits at the bottom of the library and cannot import a
registry. This module sits above every registry a config names: it maps each registry key a
field carries (:func:`fedgray.config_schema.registered`) to that registry, and checks the
names, a strategy's options and flags and the tracking sinks. Every config a run uses goes
through :func:`resolve` (:func:`load_config` and :func:`config_from_dict` call it) before
anything starts, so a misspelt name is one line naming its field.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from fedgray import devices, tracking
from fedgray.adapters import methods, prompt
from fedgray.backbone.access import AccessLevel
from fedgray.config import Config, parse_config, parse_document, read_config
from fedgray.config_schema import ConfigError, build, coerce, cut, shown
from fedgray.data import partitioners
from fedgray.data import registry as datasets
from fedgray.fl.common import compression, selection_rules
from fedgray.privacy import ledger, objectives
from fedgray.tasks import objectives as tasks
from fedgray.train import optimizers, schedule
from strategies import registry as strategies

REGISTRIES: dict[str, Callable[[], Collection[str]]] = {
    "access level": lambda: [level.value for level in AccessLevel],
    "dataset": lambda: datasets.DATASETS,
    "method": lambda: methods.METHODS,
    "projection": lambda: prompt.PROJECTIONS,
    "task": lambda: tasks.TASKS,
    "schedule": lambda: schedule.SCHEDULES,
    "optimizer": lambda: optimizers.OPTIMIZERS,
    "device": lambda: devices.DEVICES,
    "precision": lambda: devices.PRECISIONS,
    "tracking sink": lambda: tracking.TRACKERS,
    "partitioner": lambda: partitioners.PARTITIONERS,
    "strategy": lambda: strategies.STRATEGIES,
    "compression": lambda: compression.COMPRESSIONS,
    "selection": lambda: selection_rules.SELECTIONS,
    "selection split": lambda: selection_rules.SELECTION_SPLITS,
    "accountant": lambda: ledger.ACCOUNTANTS,
    "objective": lambda: objectives.OBJECTIVES,
}
"""Registry key (as :func:`~fedgray.config_schema.registered` names it, and as messages say
it) -> the names that registry serves, read from the registry itself when a config is
resolved. A key may also hold patterns ending in ``<...>`` (``folder:<path>``): a value with
that prefix is accepted."""


SECTIONS: dict[str, Callable[[], Mapping[str, type[Any]]]] = {
    "method section": methods.method_sections,
}
"""Sections key (as :func:`~fedgray.config_schema.sections` names it) -> the sections its
registry's rows declare, by name: each row brings the dataclass of its own options."""


def check_name(value: Any, registry: str, where: str) -> None:
    """Refuse ``value`` (a name or a list of names) unless registry ``registry`` serves it."""
    known = list(REGISTRIES[registry]())
    prefixes = tuple(k[: k.index("<")] for k in known if k.endswith(">") and "<" in k)
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item not in known and not (prefixes and str(item).startswith(prefixes)):
            raise ConfigError(
                f"{where}: unknown {registry} {shown(item)} (known: {', '.join(known)})"
            )


def _check_names(section: Any, where: str) -> None:
    """Type the row-declared sections of ``section`` (:data:`SECTIONS`: every row's, its
    defaults where none is given), then check every registry-backed field of ``section``
    and of the sections inside it."""
    for field in dataclasses.fields(section):
        value, path = getattr(section, field.name), f"{where}{field.name}"
        if "sections" in field.metadata:
            value = _typed_sections(value, SECTIONS[field.metadata["sections"]](), where)
            setattr(section, field.name, value)
            for name, typed in value.items():
                _check_names(typed, f"{where}{name}.")
        elif dataclasses.is_dataclass(value):
            _check_names(value, f"{path}.")
        elif "registry" in field.metadata and value is not None:
            check_name(value, field.metadata["registry"], path)


def _typed_sections(
    given: Mapping[str, Any], known: Mapping[str, type[Any]], where: str
) -> dict[str, Any]:
    """Every section of ``known`` built from what ``given`` holds for it; a section no row
    declares is refused as the schema refuses an unknown key."""
    for name in given:
        if name not in known:
            raise ConfigError(
                f"{where}{cut(str(name))}: unknown section (known sections: {', '.join(known)})"
            )
    typed = {}
    for name, cls in known.items():
        value = given.get(name, {})
        typed[name] = value if isinstance(value, cls) else build(cls, value, where=f"{where}{name}")
    return typed


def _strategy_options(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the options strategy ``strategy``'s constructor takes
    (names and types), so that a wrong one is refused before a run starts."""
    known = strategies.strategy_options(strategy)
    checked = {}
    for key, value in options.items():
        where = f"federation.strategy_options.{cut(str(key))}"
        if key not in known:
            choices = ", ".join(known) or "none"
            raise ConfigError(f"{where}: not an option of {strategy} (its options: {choices})")
        checked[key] = coerce(value, known[key], where)
    return checked


STRATEGY_NEEDS: dict[str, tuple[Callable[[Config], bool], str]] = {
    "secure": (
        lambda config: config.federation.secure_aggregation.enabled,
        "secure aggregation reveals only the sum of the updates; '{name}' needs each one",
    ),
    "central": (
        lambda config: config.privacy.central.enabled,
        "central DP calibrates its noise to a mean of clipped updates; '{name}' is not one",
    ),
}
"""A strategy row's flag -> when a config needs it, and why (with ``{name}``)."""


def _check_strategy_flags(config: Config) -> None:
    """Refuse a strategy whose registry row lacks a flag the config needs."""
    name = config.federation.strategy
    for flag, (needed, why) in STRATEGY_NEEDS.items():
        allowed = strategies.strategies_with(flag)
        if needed(config) and name not in allowed:
            reason = why.format(name=name)
            raise ConfigError(f"federation.strategy: {reason} (use {', '.join(allowed)})")


def resolve(config: Config) -> Config:
    """``config`` with its names checked against the registries, its strategy options typed
    by the strategy's constructor, and its strategy and tracking sinks checked against what
    the run needs; a ConfigError naming the field otherwise."""
    _check_names(config, "")
    fed = config.federation
    if fed.strategy_options:
        fed.strategy_options = _strategy_options(fed.strategy, fed.strategy_options)
    _check_strategy_flags(config)
    tracking.check_installed(config.output.track)
    return config


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved :class:`Config` of ``data`` plus ``key=value`` overrides."""
    return resolve(parse_config(data, overrides))


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The resolved :class:`Config` of a YAML file (the defaults when ``path`` is None) plus
    ``key=value`` overrides."""
    return resolve(read_config(path, overrides))


@functools.lru_cache(maxsize=4)
def _resolved_document(document: str) -> Config:
    return resolve(parse_document(document))


def resolve_document(document: str) -> Config:
    """The resolved Config of a :func:`~fedgray.config.to_document` document, parsed and
    checked once per process (every message of a run carries the same document); each call
    gets its own copy, which it may change."""
    return copy.deepcopy(_resolved_document(document))
