"""A Flower process's reaper: its whole process tree ends when the fedgray command that
started it dies, even by SIGKILL.

A SuperLink starts ``flower-superexec``, which starts ``flwr-simulation`` or
``flwr-serverapp``, which starts Ray; when the fedgray command is killed with SIGKILL it
can stop none of them, and a Flower child whose parent died is adopted by init and runs
on (a simulation goes on writing into the run folder). So
:class:`~fedgray.launch.processes.Processes` starts each Flower executable under this
reaper, ``python -m fedgray.launch.reaper STARTER -- COMMAND...``. The reaper
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
    """``STARTER -- COMMAND...``: run COMMAND under the reaper (see the module docstring)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m fedgray.launch.reaper STARTER -- COMMAND...", file=sys.stderr)
        return 2
    starter, command = int(argv[0]), argv[2:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    die_with_starter(starter, signal.SIGTERM)()  # exits if the starter is gone already
    status = 1
    try:
        child = subprocess.Popen(command)
        status = child.returncode = _wait_reaping(child.pid)
    except _Stop:
        status = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_tree()
    return status


def _wait_reaping(child: int) -> int:
    """Block until ``child`` exits, reaping every other descendant (adopted orphans) that
    exits before it; ``child``'s status as :attr:`subprocess.Popen.returncode` gives it
    (``-N`` for signal N). A signal's handler that raises ends the wait."""
    while True:
        pid, raw = os.waitpid(-1, 0)
        if pid == child:
            return os.waitstatus_to_exitcode(raw)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
