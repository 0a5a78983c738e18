"""Where fedgray keeps cached artifacts (the built-in owner's backbone)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$FEDGRAY_CACHE``, else ``$XDG_CACHE_HOME/fedgray``, else ``~/.cache/fedgray``."""
    if os.environ.get("FEDGRAY_CACHE"):
        return Path(os.environ["FEDGRAY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedgray"
