"""A Flower process's guardian: its whole process tree ends when the fedgray command that
started it dies, even by SIGKILL.

A SuperLink starts ``flower-superexec``, which starts ``flwr-simulation`` or
``flwr-serverapp``, which starts Ray; when the fedgray command is killed with SIGKILL it
can stop none of them, and a Flower child whose parent died is adopted by init and runs
on (a simulation goes on writing into the run folder). So
:class:`~fedgray.launch.processes.Processes` starts each Flower executable under this
guardian, ``python -m fedgray.launch.guardian STARTER -- COMMAND...``. The guardian
becomes a child subreaper (Linux), so every descendant, orphaned or not, stays below it;
the kernel sends it SIGTERM when STARTER dies; on SIGTERM or SIGINT, or when COMMAND
exits, it TERMs, then KILLs, every descendant and exits with COMMAND's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from fedgray.launch.processes import STOP_GRACE_S, descendants, die_with_starter

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
POLL_S = 0.2


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _end_tree() -> None:
    """TERM every descendant, wait, KILL what is left, and reap them all."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        below = [pid for pid in descendants(os.getpid()) if pid != os.getpid()]
        for pid in below:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        while below and time.monotonic() < deadline:
            _reap()
            below = [pid for pid in descendants(os.getpid()) if pid != os.getpid()]
            time.sleep(0.05)
    _reap()


def _reap() -> None:
    """Collect every exited child (orphans adopted by this subreaper included)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def main(argv: list[str]) -> int:
    """``STARTER -- COMMAND...``: run COMMAND, guarded (see the module docstring)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m fedgray.launch.guardian STARTER -- COMMAND...", file=sys.stderr)
        return 2
    starter, command = int(argv[0]), argv[2:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    die_with_starter(starter, signal.SIGTERM)()  # exits if the starter is gone already
    status = 1
    try:
        child = subprocess.Popen(command)
        while (code := child.poll()) is None:
            time.sleep(POLL_S)
            _reap_others(child.pid)
        status = code
    except _Stop:
        status = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_tree()
    return status


def _reap_others(keep: int) -> None:
    """Collect adopted orphans that exited, leaving ``keep`` to :meth:`Popen.poll`."""
    for pid in descendants(os.getpid()):
        if pid in (keep, os.getpid()):
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
