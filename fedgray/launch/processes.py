"""Start Flower's processes in process groups of their own, and stop every one of them.

A SuperLink starts ``flower-superexec``, which starts ``flwr-serverapp``; a SuperNode starts
``flower-superexec``, which starts a ``flwr-clientapp`` per message. Some of them start
sessions of their own, so killing the group we started is not enough: :meth:`Processes.stop`
collects the process group of every descendant first, then TERMs them all, waits, and KILLs
what is left. It runs on normal exit, on failure, on ``atexit`` and on SIGINT/SIGTERM. A
command killed with SIGKILL runs none of that: so each long-running Flower process starts
under a reaper (:mod:`fedgray.launch.reaper`) that ends its whole tree when the command
dies, and a short one (the ``flwr`` CLI) asks the kernel to kill it then (Linux's
parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

STOP_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_starter(starter: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """What a child runs between fork and exec: ``sig`` when ``starter`` dies (exit at once
    if it died already, in the moment before the request took effect). Only a system call:
    safe after fork in a threaded process."""

    def request() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != starter:
            os._exit(1)

    return request


def under_reaper(args: Sequence[str]) -> list[str]:
    """``args`` under :mod:`fedgray.launch.reaper`, on behalf of this process."""
    return [sys.executable, "-m", "fedgray.launch.reaper", str(os.getpid()), "--", *args]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _name(process: subprocess.Popen) -> str:
    """The executable's name (the one the reaper runs)."""
    args = list(process.args) if isinstance(process.args, list | tuple) else [process.args]
    first = args[args.index("--") + 1] if "fedgray.launch.reaper" in args else args[0]
    return Path(str(first)).name


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen) -> None:
    """Return once ``host:port`` accepts connections; one line if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{_name(process)} exited ({process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def _processes() -> Iterator[tuple[int, str, int, int]]:
    """``(pid, state, parent, group)`` of every process, from /proc (Linux)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent, group = stat.rsplit(")", 1)[1].split()[:3]
        yield int(entry.name), state, int(parent), int(group)


def _children() -> dict[int, list[int]]:
    """Every process's children."""
    tree: dict[int, list[int]] = {}
    for pid, _, parent, _ in _processes():
        tree.setdefault(parent, []).append(pid)
    return tree


def _wait_until_gone(groups: set[int], timeout: float) -> None:
    """Until no live (non-zombie) process is left in ``groups``: a signal is delivered
    asynchronously, and an orphan's zombie waits for a reaper we do not control."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(g in groups and state != "Z" for _, state, _, g in _processes()):
            return
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _groups(pids: Sequence[int]) -> set[int]:
    groups = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgrp())  # never our own group
    return groups


def _signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


class Processes:
    """The processes one command started; :meth:`stop` ends them and all they started."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        self._handles: list[object] = []

    def start(
        self,
        args: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen:
        """Start ``args`` under a reaper in a new session (its own process group), output
        to ``log_file``; the reaper inherits ``pass_fds`` (a lock it holds while the
        command's tree lives)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = log_file.open("ab")
        self._handles.append(log)
        process = subprocess.Popen(
            under_reaper(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        self.started.append(process)
        return process

    def run(
        self,
        args: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str],
        timeout: float | None,
        echo: Callable[[str], None] | None = None,
    ) -> int:
        """Run ``args`` to its end (in its own group, stopped with the rest), each output
        line to ``log_file`` and ``echo``; its exit status, or TimeoutError after ``timeout``
        (None: no limit)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            preexec_fn=die_with_starter(os.getpid()),
            text=True,
            bufsize=1,
        )
        self.started.append(process)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.kill(process)

        timer = threading.Timer(timeout, expire) if timeout is not None else None
        if timer is not None:
            timer.start()
        try:
            with log_file.open("a", encoding="utf-8") as log:
                assert process.stdout is not None
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    if echo is not None:
                        echo(line.rstrip("\n"))
            status = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if expired.is_set():
            raise TimeoutError(f"{Path(str(args[0])).name}: still running after {timeout:.0f} s")
        return status

    def kill(self, process: subprocess.Popen, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to ``process`` and every process group below it (a fault, or a stop),
        and wait until they are gone: ``process`` may be a reaper that dies at once while
        the SuperLink below it still holds its port for a moment."""
        groups = _groups(descendants(process.pid))
        _signal_groups(groups, sig)
        _wait_until_gone(groups, STOP_GRACE_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)

    def stop(self) -> None:
        """TERM every started process and its descendants' groups, then KILL the rest."""
        groups = _groups([p for proc in self.started for p in descendants(proc.pid)])
        if groups:
            _signal_groups(groups, signal.SIGTERM)
            # A reaper given SIGTERM takes up to a grace for TERM and one for KILL to end
            # its tree; killing it sooner would orphan what it has not reached yet.
            deadline = time.monotonic() + 2 * STOP_GRACE_S + 1.0
            while time.monotonic() < deadline and any(p.poll() is None for p in self.started):
                time.sleep(0.1)
            groups |= _groups([p for proc in self.started for p in descendants(proc.pid)])
            _signal_groups(groups, signal.SIGKILL)
            _wait_until_gone(groups, STOP_GRACE_S)
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_S)
        for handle in self._handles:
            handle.close()  # type: ignore[attr-defined]
        self.started.clear()
        self._handles.clear()


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which (a command exits 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def supervised() -> Iterator[Processes]:
    """A :class:`Processes` stopped however the block ends: normally, by an exception, by
    SIGINT/SIGTERM (turned into :class:`Stopped` here), or at interpreter exit."""
    processes = Processes()
    atexit.register(processes.stop)
    in_main = threading.current_thread() is threading.main_thread()  # signals: main only
    signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in previous:
        signal.signal(sig, _raise_interrupt)
    try:
        yield processes
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        processes.stop()
        atexit.unregister(processes.stop)
