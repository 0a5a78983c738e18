"""A doorbell from a site's SuperNode to its one ClientApp process: a FIFO in the site's folder.

Flower 1.42's SuperExec asks its SuperNode for a task over HTTP at a fixed interval. A short
interval makes each message wait less but keeps an idle site busy (every 0.1 s: 0.14 of a
core per site, a fifth of a 2-core machine for three sites on loopback); a long one makes
every message wait half of it, four times a round under SecAgg+. So the SuperNode rings
this bell once a message is in (its objects stored: the task's input is complete), and the
ClientApp process, which sleeps on the bell between its requests, asks at once. Its
interval stays as the fallback: a ring that finds no one listening (the process is still
starting) is dropped, never an error, and a ring is only ever a hint to ask now.

The FIFO is the site user's alone (mode 0600, in the site's folder); a byte on it carries
nothing but "ask now".
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
from pathlib import Path

BELL_ENV = "FEDGRAY_DOORBELL"
"""The environment variable naming the FIFO, set for both of a site's processes."""
BELL_FILE = "clientapp.doorbell"


def install(path: Path) -> Path:
    """The FIFO at ``path``, made (mode 0600) unless one is there from an earlier start;
    one line if something else is."""
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(path.lstat().st_mode):
            raise ValueError(f"{path}: exists and is not the site's doorbell (a FIFO)") from None
    return path


def ring(path: Path) -> None:
    """Ring the bell at ``path``: one byte, without waiting. Dropped when no one listens or
    when the FIFO is full (rung many times already, the listener will wake anyway)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno in (errno.ENXIO, errno.ENOENT):  # no listener, or no bell
            return
        raise
    try:
        with contextlib.suppress(BlockingIOError):
            os.write(fd, b"\1")
    finally:
        os.close(fd)


class Bell:
    """The listening end of the bell at ``path``."""

    def __init__(self, path: Path) -> None:
        # read-write: the FIFO then always has a writer, so it never reads as ended (which
        # would wake every wait at once) between the SuperNode's rings
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def wait(self, seconds: float) -> None:
        """Return when the bell rings or after ``seconds``, whichever comes first; every ring
        so far is answered (a later wait sleeps until the next one)."""
        if not select.select([self.fd], [], [], seconds)[0]:
            return
        with contextlib.suppress(BlockingIOError):  # empty: every ring is answered
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        """Stop listening."""
        os.close(self.fd)
