"""The train phase reads replies as a pull returns them, and stops at the round's timeout;
what it pushes reaches a grid that reads the messages twice, as Flower's HTTP grid does."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedgray.fl.serverapp.exchange import arriving


class Sent:
    """What :func:`arriving` reads of a message it sends: its content (to pack)."""

    def __init__(self) -> None:
        self.content = RecordDict()


class Reply(Sent):
    """What :func:`arriving` reads of a reply."""

    def __init__(self, answers: str) -> None:
        super().__init__()
        self.metadata = type("Metadata", (), {"reply_to_message_id": answers})()

    def has_error(self) -> bool:
        return False


class SlowGrid:
    """Replies to message ``i`` once ``delays[i]`` seconds have passed since the push."""

    def __init__(self, delays: list[float]) -> None:
        self.delays, self.pushed, self.pulls = delays, 0.0, 0

    def push_messages(self, messages: Iterable[object]) -> list[str]:
        self.pushed = time.monotonic()
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, ids: Iterable[str]) -> list[Reply]:
        self.pulls += 1
        waited = time.monotonic() - self.pushed
        return [Reply(i) for i in sorted(ids) if self.delays[int(i)] <= waited]


def test_replies_come_as_they_arrive_until_the_timeout() -> None:
    grid = SlowGrid([0.0, 0.15, 30.0])  # the third site never answers in time
    messages = cast(list[Message], [Sent() for _ in range(3)])
    started = time.monotonic()
    got = [
        r.metadata.reply_to_message_id for r in arriving(cast(Grid, grid), messages, timeout=0.5)
    ]
    assert got == ["0", "1"]
    assert 0.5 <= time.monotonic() - started < 5  # waited for the third until the timeout
    assert grid.pulls >= 3  # polled again after pulls that found nothing


def test_every_reply_ends_the_wait() -> None:
    grid = SlowGrid([0.0, 0.0])
    messages = cast(list[Message], [Sent() for _ in range(2)])
    started = time.monotonic()
    assert len(list(arriving(cast(Grid, grid), messages, timeout=60))) == 2
    assert time.monotonic() - started < 5 and grid.pulls == 1


class TwiceReadingGrid(SlowGrid):
    """Flower 1.42's HTTP grid: returns at once for an empty (falsy) argument, else reads
    the messages once to check them and again to send them."""

    def __init__(self) -> None:
        super().__init__([0.0, 0.0])
        self.requests: list[int] = []

    def push_messages(self, messages: Iterable[object]) -> list[str]:
        if not messages:
            return []
        checked = list(messages)
        self.requests.append(len(list(messages)))  # the request carries the second reading
        return super().push_messages(checked)


def test_what_is_pushed_survives_a_second_reading_and_an_empty_phase_sends_nothing() -> None:
    grid = TwiceReadingGrid()
    messages = cast(list[Message], [Sent() for _ in range(2)])
    assert len(list(arriving(cast(Grid, grid), iter(messages), timeout=60))) == 2
    assert list(arriving(cast(Grid, grid), iter([]), timeout=60)) == []
    assert grid.requests == [2]
