"""``flower-supernode`` that asks the SuperLink for its next message sooner, and rings its
ClientApp process once a message is in.

Flower 1.42's SuperNode asks the SuperLink for a message, and when there is none it waits
3 s before asking again (and it checks for its ClientApp's reply every 0.5 s). A round in
the clear is one message per site; a SecAgg+ round is four, each sent only once every
site has answered the one before, so a site waits out most of that pause at every stage:
about 2 s of each stage on three sites, whatever the training costs. This runs Flower's
own SuperNode, same arguments, with its pauses between requests to the SuperLink capped at
:data:`IDLE_WAIT_S` (the price: more requests from an idle site, one every
:data:`IDLE_WAIT_S` instead of every 3 s) and its looks for the reply, which ask nothing of
the SuperLink, every :data:`REPLY_WAIT_S`.

Once a message and all its objects are in, it rings the site's doorbell
(:mod:`fedgray.launch.doorbell`, named by ``FEDGRAY_DOORBELL``): the site's ClientApp
process sleeps on it between its requests for a task, and takes the message's task at once.

It also finishes, as failed, the task of a message whose run stops while the SuperNode
receives it (a SuperLink restarted mid-round): Flower leaves that task open, and the site's
one ClientApp process (:mod:`fedgray.fl.clientapp.resident`) would wait on it instead of
serving the next run.

The Flower internals this reaches are in :mod:`fedgray.fl.common.flower_internals`.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from fedgray.fl.common.flower_internals import (
    after_each_message,
    cap_supernode_pauses,
    fail_tasks_of_abandoned_messages,
)
from fedgray.launch.doorbell import BELL_ENV, ring

IDLE_WAIT_S = 0.2
REPLY_WAIT_S = 0.02


def main() -> None:
    """``flower-supernode`` with shorter pauses, finishing abandoned tasks, ringing the
    doorbell that ``FEDGRAY_DOORBELL`` names (if any) after each message."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    cap_supernode_pauses(IDLE_WAIT_S, local_s=REPLY_WAIT_S)
    fail_tasks_of_abandoned_messages()
    if bell := os.environ.get(BELL_ENV):
        after_each_message(functools.partial(ring, Path(bell)))
    sys.argv[0] = "flower-supernode"  # the name Flower's exit messages go by
    flower_supernode()


if __name__ == "__main__":
    main()
