"""Replies one at a time, as they arrive: what lets the server fold an update and let it go.

``Grid.send_and_receive`` returns every reply at once, so a round of 1,000 sites holds
1,000 updates before the strategy sees the first. :func:`arriving` pushes the same messages
and yields each reply as a pull returns it, with the same stopping rule (all replied, or
``timeout`` seconds passed). Every phase in the clear uses it (train, evaluate, the roster's
name queries); SecAgg+ runs Flower's own workflow.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid

# Seconds to wait after a pull that found no reply: as Flower's in-memory (simulation)
# grid; its HTTP grid (the deployment engine's ServerApp) waits 3 s between pulls.
PULL_INTERVAL = 0.1


def arriving(
    grid: Grid, messages: Iterable[Message], *, timeout: float | None
) -> Iterator[Message]:
    """Push ``messages`` and yield their replies in the order they arrive."""
    pending = set(grid.push_messages(messages))
    end = time.monotonic() + (timeout or 0.0)
    while pending and (timeout is None or time.monotonic() < end):
        pulled = list(grid.pull_messages(pending))
        pulled.reverse()
        if not pulled:
            time.sleep(PULL_INTERVAL)
        while pulled:  # popped, so that each reply is held only while the caller has it
            reply = pulled.pop()
            pending.discard(reply.metadata.reply_to_message_id)
            yield reply
