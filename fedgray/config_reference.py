"""The configuration reference, rendered from the config dataclasses themselves.

The docs build inserts this Markdown at build time (``mkdocs_hooks.py``), so the reference
lists exactly the keys, types, defaults and checks that :func:`fedgray.resolver.load_config`
enforces and cannot drift from them.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

from fedgray.config import Config
from fedgray.resolver import REGISTRIES, SECTIONS

_SPHINX_ROLE = re.compile(r":(?:mod|class|func|meth|attr):`~?")


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(t) for t in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_text(t) for t in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _rule_text(field: dataclasses.Field[Any]) -> str:
    if "registry" in field.metadata:
        what = field.metadata["registry"]
        return f"a known {what}: " + ", ".join(f"`{name}`" for name in REGISTRIES[what]())
    if "check" in field.metadata:
        return str(field.metadata["check"][1])
    return ""


def _sections(cls: type, prefix: str) -> Iterator[tuple[str, type]]:
    yield prefix, cls
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if "sections" in field.metadata:  # declared by registry rows (resolver.SECTIONS)
            for name, section in SECTIONS[field.metadata["sections"]]().items():
                yield from _sections(section, f"{prefix}.{name}")
        elif dataclasses.is_dataclass(hints[field.name]):
            yield from _sections(hints[field.name], f"{prefix}.{field.name}".lstrip("."))


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """One section per config dataclass: its docstring, then a table of its plain keys."""
    out: list[str] = []
    for prefix, cls in _sections(Config, ""):
        if not prefix:
            continue
        hints = typing.get_type_hints(cls)
        doc = _SPHINX_ROLE.sub("`", inspect.cleandoc(cls.__doc__ or ""))
        out += [f"## `{prefix}`", "", doc, ""]
        out += ["| key | type | default | accepted values |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]) or "sections" in field.metadata:
                continue
            cells = (
                f"`{prefix}.{field.name}`",
                _type_text(hints[field.name]),
                _default_text(field),
                _rule_text(field),
            )
            out.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
        out.append("")
    return "\n".join(out)
