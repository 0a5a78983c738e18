"""Reading a config's YAML within bounds, so that no input can stall or flood a command.

PyYAML shares a node among all the aliases of its anchor, so nine aliases of nine aliases
of ... load in microseconds and then expand into billions of values as soon as the config
is copied, compared or written back. A config is small: the file is capped at
:data:`MAX_BYTES`, and its values, every alias expanded, at :data:`MAX_VALUES`, counted on
the shared nodes before anything is built from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from fedgray.config_schema import ConfigError, cut

MAX_BYTES = 1 << 20
MAX_VALUES = 100_000


class _RecursiveAlias(Exception):
    """An anchor that contains an alias of itself."""


def _expanded_size(node: Node) -> int:
    """How many values ``node`` holds with every alias expanded (shared nodes counted once
    per use, each computed once); raises :class:`_RecursiveAlias` on a cycle."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(current: Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _RecursiveAlias
        open_nodes.add(key)
        total = 1
        if isinstance(current, SequenceNode):
            total += sum(size(child) for child in current.value)
        elif isinstance(current, MappingNode):
            total += sum(size(k) + size(v) for k, v in current.value)
        open_nodes.discard(key)
        sizes[key] = min(total, MAX_VALUES + 1)  # no need to count past the limit
        return sizes[key]

    return size(node)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document expanding beyond :data:`MAX_VALUES`."""

    def compose_document(self) -> Node | None:
        node: Node | None = super().compose_document()
        if node is None:
            return None
        try:
            values = _expanded_size(node)
        except _RecursiveAlias:
            raise ConfigError(f"{self.name}: an alias refers to its own anchor") from None
        if values > MAX_VALUES:
            raise ConfigError(
                f"{self.name}: expands to more than {MAX_VALUES:,} values (through its "
                "aliases); a config is far smaller"
            )
        return node


def _check_size(where: str, size: int) -> None:
    if size > MAX_BYTES:
        raise ConfigError(f"{where}: {size:,} bytes, more than the {MAX_BYTES:,} a config may hold")


def parse_yaml(text: str, *, where: str) -> Any:
    """``text`` as YAML, named ``where`` in errors: a :class:`ConfigError` when too large or
    too deeply nested; ``yaml.YAMLError`` when not YAML."""
    _check_size(where, len(text.encode("utf-8", "surrogateescape")))
    loader = _BoundedLoader(text)
    loader.name = where
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except ConfigError:
        raise
    except ValueError as error:  # a YAML integer of thousands of digits, a 13th month...
        raise ConfigError(f"{where}: cannot read a value ({cut(str(error))})") from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """The YAML file ``path``, checked for size before it is read; every failure is one
    :class:`ConfigError` line naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    _check_size(str(path), path.stat().st_size)
    try:
        return parse_yaml(path.read_text(encoding="utf-8"), where=str(path))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} is not valid YAML") from None
