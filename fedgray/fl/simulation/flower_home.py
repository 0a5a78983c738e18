"""The temporary home of one ``fedgray run``'s Flower and Ray files.

Flower's CLI home (its config, the SuperLink's database) and Ray's session live in a fresh
directory under the system temp dir, removed at the end, so nothing outside the run folder
is left behind. ``kill -9`` leaves no chance to clean: each dir names its owner's pid, and
the next run sweeps the dirs whose owner is gone, stopping what still runs from them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOME_PREFIX = "fedgray-"
OWNER_FILE = "owner.pid"
REMOVE_TIMEOUT_S = 10.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _uses(entry: Path, folder: str) -> bool:
    """Whether the process ``entry`` (a /proc folder) names ``folder`` in its command line
    (Ray's workers name their session dir, the SuperLink its database) or runs in it."""
    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return folder in command or f"{os.readlink(entry / 'cwd')}/".startswith(f"{folder}/")


def _kill_processes_using(folder: Path) -> None:
    """SIGKILL every process that uses ``folder`` (see :func:`_uses`)."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if _uses(entry, str(folder)):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _remove(folder: Path, *, timeout: float = REMOVE_TIMEOUT_S) -> None:
    """Stop what still uses ``folder`` and remove it; a process that dies a moment later
    may still add a file while the tree is walked, so walk again until it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        _kill_processes_using(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def sweep_stale_homes() -> list[Path]:
    """Remove the Flower homes of runs that were killed (kill -9 leaves no chance to clean),
    stopping what still runs from them (Ray's agents outlive their driver for a while)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        _remove(folder)
        removed.append(folder)
    return removed


@contextmanager
def flower_home() -> Iterator[Path]:
    """A fresh Flower home with ``flwr/`` and ``ray/`` in it, for the duration; whatever still
    runs from it at the end is stopped, and it is removed. Short, under the system temp dir:
    Ray's AF_UNIX socket paths stop at 107 bytes. Dirs left by killed runs are swept first."""
    sweep_stale_homes()
    home = Path(tempfile.mkdtemp(prefix=HOME_PREFIX))
    for folder in ("flwr", "ray"):
        (home / folder).mkdir()
    (home / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield home
    finally:
        _remove(home)  # all stopped by now, unless something escaped
