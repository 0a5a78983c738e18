"""The run's ``progress.log``: what the ServerApp says reaches ``fedgray run``'s terminal,
and the error that ended a run comes back as one line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fedgray.fl.serverapp.failures import FederationError
from fedgray.fl.serverapp.progress import Follower, error_line, is_error, record_error, teed


def test_every_line_said_is_also_in_the_log_and_the_error_is_marked(tmp_path: Path) -> None:
    log, said = tmp_path / "progress.log", []
    echo = teed(said.append, log)
    echo("round 1/2")
    record_error(log, FederationError("round 2: 1 of 3 sites trained, need 2"))
    lines = log.read_text().splitlines()
    assert said == ["round 1/2"] and lines[0] == "round 1/2"
    assert is_error(lines[1]) and not is_error(lines[0])
    assert error_line(FederationError("too few\n sites")) == "too few sites"
    assert error_line(ValueError("")) == "ValueError: no message"  # a bug names its type


def test_the_follower_prints_new_whole_lines_and_keeps_the_error(tmp_path: Path) -> None:
    log = tmp_path / "progress.log"
    log.write_text("a line of the run before this resume\n")
    printed: list[str] = []
    with Follower(log, printed.append) as follower:
        with log.open("a") as out:
            out.write("round 1/2 par")
            out.flush()
            time.sleep(0.5)  # the follower reads half a line: it waits for the rest
            assert printed == []
            out.write("t\n")
        record_error(log, ValueError("boom"))
        deadline = time.monotonic() + 10
        while not printed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert printed == ["round 1/2 part"]  # while the run goes on, not only at its end
    assert follower.error == "ValueError: boom"
    assert printed == ["round 1/2 part"]
    assert not [t for t in threading.enumerate() if t is follower._thread]
