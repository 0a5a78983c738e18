"""Advisory locks that end with the process holding them, however it ends.

``flock`` locks belong to an open file description: the kernel drops one when the last
descriptor on it closes, so a killed holder never leaves a stale lock behind, and a child
that inherited the descriptor keeps it for as long as it lives.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path`` (made if missing) exclusively, or None if another
    holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def holder(path: Path) -> str:
    """The process id a lock's holder wrote into ``path`` (see :func:`record_holder`)."""
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def record_holder(fd: int, pid: int) -> None:
    """Write ``pid`` into the locked file, for :func:`holder`."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)
