"""MkDocs hook: fills the configuration reference from the config dataclasses at build time."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- config-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with :func:`fedgray.config_reference.reference_markdown`'s tables."""
    if MARKER not in markdown:
        return markdown
    from fedgray.config_reference import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
