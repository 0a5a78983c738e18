"""The run's own log, ``progress.log`` in its folder: every line the server says, and the
error that ended it.

The ServerApp runs wherever Flower starts it (a SuperLink's subprocess, a deployment's
machine), so its lines cannot reach a terminal directly. It appends them to this file,
which ``fedgray run`` and ``fedgray deploy demo`` follow (:class:`Follower`) and an operator
can ``tail -f``; a run that fails writes its reason as one last line starting with
:data:`ERROR_PREFIX`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fedgray.fl.serverapp.failures import FederationError
from fedgray.fl.serverapp.server import Echo

PROGRESS = "progress.log"
ERROR_PREFIX = "error: "


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def teed(echo: Echo, path: Path) -> Echo:
    """``echo``, with every line also appended to ``path``."""

    def say(line: str) -> None:
        echo(line)
        _append(path, line)

    return say


def error_line(error: BaseException) -> str:
    """One line for the error that ended a run: a FederationError says it all already;
    anything else (a bug, a crash) is named by its type."""
    text = " ".join(str(error).split()) or "no message"
    return text if isinstance(error, FederationError) else f"{type(error).__name__}: {text}"


def record_error(path: Path, error: BaseException) -> None:
    """Append the error that ended the run to ``path``, marked for :func:`is_error`."""
    _append(path, ERROR_PREFIX + error_line(error))


def is_error(line: str) -> bool:
    """Whether ``line`` of a progress log is the error that ended the run."""
    return line.startswith(ERROR_PREFIX)


class Follower:
    """Passes each whole line appended to a progress log from now on to ``echo`` (polled
    from a thread while the block runs, and once more at its end) and keeps the error line;
    what the log held before (a resumed run's earlier lines) is not repeated."""

    def __init__(self, path: Path, echo: Echo) -> None:
        self.path, self.echo = path, echo
        self.offset = path.stat().st_size if path.is_file() else 0
        self.error: str | None = None
        self._partial = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("r", encoding="utf-8", errors="replace") as log:
            log.seek(self.offset)
            text = log.read()
            self.offset = log.tell()
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if is_error(line):
                self.error = line[len(ERROR_PREFIX) :]
            else:
                self.echo(line)

    def _loop(self) -> None:
        while not self._done.wait(0.2):
            self._read()

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._read()
