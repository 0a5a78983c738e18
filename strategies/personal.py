"""Personalisation: adapters whose names start with a configured prefix never leave the site."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

V = TypeVar("V")


def is_personal(key: str, prefixes: Iterable[str]) -> bool:
    """Whether state-dict ``key`` belongs to a personal module (``image_out`` keeps
    ``image_out.weight`` and ``image_out.bias`` local)."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def split_personal(
    state: Mapping[str, V], prefixes: Iterable[str]
) -> tuple[dict[str, V], dict[str, V]]:
    """``(shared, personal)`` parts of an adapter state dict."""
    prefixes = tuple(prefixes)
    shared = {k: v for k, v in state.items() if not is_personal(k, prefixes)}
    personal = {k: v for k, v in state.items() if is_personal(k, prefixes)}
    return shared, personal
