"""Turn plain dicts (parsed YAML) into typed, validated dataclasses.

Every error is a :class:`ConfigError` with one line that names the offending field
by its dotted path, e.g. ``train.steps: expected an integer, got 'many'``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
SHOWN_CHARS = 60  # a value longer than this is cut in messages


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field."""


def cut(text: str) -> str:
    """``text`` for a one-line message, cut to about :data:`SHOWN_CHARS` characters (a
    megabyte of config value must not become a megabyte of error)."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[: SHOWN_CHARS - 20]}...({len(text):,} characters)"


def shown(value: Any) -> str:
    """``repr(value)``, cut as :func:`cut` does."""
    return cut(repr(value))


def check(predicate: Callable[[Any], bool], requirement: str) -> dict[str, Any]:
    """Field metadata: ``field(default=1, metadata=check(lambda v: v > 0, "positive"))``."""
    return {"check": (predicate, requirement)}


def positive() -> dict[str, Any]:
    """Field metadata requiring a value > 0."""
    return check(lambda v: v > 0, "must be > 0")


def random_seed() -> dict[str, Any]:
    """Field metadata of a random seed: what torch and numpy both take, [0, 2**32)."""
    return check(lambda v: 0 <= v < 2**32, "must be in [0, 2**32)")


def one_of(*choices: Any) -> dict[str, Any]:
    """Field metadata requiring the value to be one of ``choices``."""
    return check(lambda v: v in choices, f"must be one of {', '.join(map(str, choices))}")


def registered(registry: str) -> dict[str, Any]:
    """Field metadata of a value that names entries of registry ``registry`` (its key in
    :data:`fedgray.resolver.REGISTRIES`, also the noun its messages use). The schema cannot
    check such a name: the registries sit above it. :func:`fedgray.resolver.resolve` does,
    for every config a run uses."""
    return {"registry": registry}


def sections(registry: str) -> dict[str, Any]:
    """Field metadata of a mapping that holds the sections registry ``registry`` declares
    (its key in :data:`fedgray.resolver.SECTIONS`): a section is written where a key of the
    dataclass would be (``method.lora.rank``), so that a registry row can bring its own
    options without the schema importing it. The schema keeps such a section as the mapping
    it was given; :func:`fedgray.resolver.resolve` checks its name and types it by its row."""
    return {"sections": registry}


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (a config field's annotation), or a ConfigError naming
    ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
        return build(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
        return dict(value)
    if tp is Any:
        return value
    number = isinstance(value, int) and not isinstance(value, bool)
    if tp is float and (number or isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value)):
        try:  # YAML 1.1 reads "1e-5" (no dot) as a string
            value = float(value)
        except OverflowError:  # an integer beyond any float
            value = math.inf
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {shown(value)}")
    if tp is float and not math.isfinite(value):  # YAML's .inf and .nan, 1e999
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    return value


def build(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad values; a
    mapping under an unknown key goes to the field marked :func:`sections`, if ``cls`` has
    one."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if "sections" not in f.metadata}
    held = [f.name for f in dataclasses.fields(cls) if "sections" in f.metadata]
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields), key=str)
    values: dict[str, Any] = {}
    if held:
        values[held[0]] = {k: dict(data[k]) for k in unknown if isinstance(data[k], Mapping)}
        unknown = [k for k in unknown if k not in values[held[0]]]
    if unknown:
        raise ConfigError(
            f"{prefix}{cut(str(unknown[0]))}: unknown key (known keys: {', '.join(sorted(fields))})"
        )
    for name, value in data.items():
        if name not in fields:
            continue  # a section, held above
        path = f"{prefix}{name}"
        values[name] = coerce(value, hints[name], path)
        predicate, requirement = fields[name].metadata.get("check", (None, ""))
        if predicate is not None and values[name] is not None and not predicate(values[name]):
            raise ConfigError(f"{path}: {requirement}, got {shown(values[name])}")
    return cls(**values)


def to_dict(instance: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists, for YAML); the sections
    of a :func:`sections` field sit where :func:`build` reads them, beside the keys."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out: dict[str, Any] = {}
            for f in dataclasses.fields(value):
                item = plain(getattr(value, f.name))
                if "sections" in f.metadata:
                    out.update(item)
                else:
                    out[f.name] = item
            return out
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return copy.deepcopy(value)

    return plain(instance)


def get_dotted(data: dict[str, Any], dotted: str) -> Any:
    """``data['a']['b']`` for ``dotted == 'a.b'``; None where a key is missing."""
    node: Any = data
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted == 'a.b'``, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{cut(dotted)}: {cut(key)} is not a section")
        node = child
    node[leaf] = value
