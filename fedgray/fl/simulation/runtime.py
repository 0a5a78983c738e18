"""The temporary home of one ``fedgray run``'s Flower and Ray runtime files.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUNTIME_PREFIX = "fedgray-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_processes_using(folder: Path) -> None:
    """SIGKILL every process whose command line names ``folder`` (Ray's workers name their
    session dir, the SuperLink its database)."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if str(folder) in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def sweep_stale_runtimes() -> list[Path]:
    """Remove the runtime dirs of runs that were killed (kill -9 leaves no chance to clean),
    stopping what still runs from them (Ray's agents outlive their driver for a while)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        _kill_processes_using(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def flower_runtime() -> Iterator[Path]:
    """A fresh runtime dir with ``flwr/`` and ``ray/`` in it, for the duration; whatever still
    runs from it at the end is stopped, and it is removed. Short, under the system temp dir:
    Ray's AF_UNIX socket paths stop at 107 bytes. Dirs left by killed runs are swept first."""
    sweep_stale_runtimes()
    runtime = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
    for folder in ("flwr", "ray"):
        (runtime / folder).mkdir()
    (runtime / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield runtime
    finally:
        _kill_processes_using(runtime)  # stopped by now, unless something escaped
        shutil.rmtree(runtime, ignore_errors=True)
