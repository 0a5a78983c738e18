"""The bell a site's SuperNode rings for its ClientApp process: a ring wakes a waiting
listener at once, every ring so far is answered by one wake, and ringing never blocks or
fails, with no one listening or with the FIFO full."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from fedgray.launch.doorbell import Bell, install, ring


def test_a_ring_wakes_a_waiting_listener_at_once(tmp_path: Path) -> None:
    bell = install(tmp_path / "bell")
    assert stat.S_IMODE(bell.stat().st_mode) == 0o600
    listener = Bell(bell)
    try:
        threading.Timer(0.2, ring, args=(bell,)).start()
        started = time.monotonic()
        listener.wait(30.0)
        assert time.monotonic() - started < 10.0  # woken by the ring, not the 30 s timeout
    finally:
        listener.close()


def test_one_wait_answers_every_ring_so_far_and_silence_waits_the_timeout(
    tmp_path: Path,
) -> None:
    bell = install(tmp_path / "bell")
    listener = Bell(bell)
    try:
        for _ in range(100_000):  # more bytes than a FIFO holds (64 KiB): never blocks
            ring(bell)
        started = time.monotonic()
        listener.wait(30.0)
        assert time.monotonic() - started < 10.0
        started = time.monotonic()
        listener.wait(0.3)  # nothing rang since
        assert time.monotonic() - started >= 0.25
    finally:
        listener.close()


def test_a_ring_with_no_one_listening_or_no_bell_is_dropped(tmp_path: Path) -> None:
    bell = install(tmp_path / "bell")
    ring(bell)  # no listener yet: nothing happens
    ring(tmp_path / "missing")
    install(bell)  # a restarted site finds its bell
    listener = Bell(bell)
    try:
        started = time.monotonic()
        listener.wait(0.3)  # the ring before anyone listened is not heard
        assert time.monotonic() - started >= 0.25
    finally:
        listener.close()


def test_a_file_in_the_bells_place_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bell").write_text("not a fifo")
    with pytest.raises(ValueError, match="bell: exists and is not the site's doorbell"):
        install(tmp_path / "bell")
