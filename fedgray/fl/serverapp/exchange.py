"""Replies one at a time, as they arrive: what lets the server fold an update and let it go.

``Grid.send_and_receive`` returns every reply at once, so a round of 1,000 sites holds
1,000 updates before the strategy sees the first. :func:`arriving` pushes the same messages
and yields each reply as a pull returns it, with the same stopping rule (all replied, or
``timeout`` seconds passed). Every phase uses it (train, evaluate, the roster's name
queries, and SecAgg+'s stages through its metered grid), so it is also where a message's
arrays are packed on the way out and unpacked on the way in
(:mod:`fedgray.fl.common.packing`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid

from fedgray.fl.common.packing import pack, unpack

# Seconds to wait after a pull that found no reply: as Flower's in-memory (simulation)
# grid; its HTTP grid (the deployment engine's ServerApp) waits 3 s between pulls.
PULL_INTERVAL = 0.1


def arriving(
    grid: Grid, messages: Iterable[Message], *, timeout: float | None
) -> Iterator[Message]:
    """Push ``messages`` (their arrays packed) and yield their replies in the order they
    arrive (unpacked)."""
    pending = set(grid.push_messages(_packed(messages)))
    end = time.monotonic() + (timeout or 0.0)
    while pending and (timeout is None or time.monotonic() < end):
        pulled = list(grid.pull_messages(pending))
        pulled.reverse()
        if not pulled:
            time.sleep(PULL_INTERVAL)
        while pulled:  # popped, so that each reply is held only while the caller has it
            reply = pulled.pop()
            pending.discard(reply.metadata.reply_to_message_id)
            if not reply.has_error():
                unpack(reply.content)
            yield reply


def _packed(messages: Iterable[Message]) -> list[Message]:
    """``messages`` with their arrays packed, as a list: Flower's HTTP grid sends nothing
    for an empty list (a phase that asks no site), but would push an empty iterator."""
    packed = list(messages)
    for message in packed:
        pack(message.content)
    return packed
