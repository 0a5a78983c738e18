"""``flower-supernode`` that asks the SuperLink for its next message sooner.

Flower 1.42's SuperNode asks the SuperLink for a message, and when there is none it waits
3 s before asking again (and it checks for its ClientApp's reply every 0.5 s). A round in
the clear is one message per site; a SecAgg+ round is four, each sent only once every
site has answered the one before, so a site waits out most of that pause at every stage:
about 2 s of each stage on three sites, whatever the training costs. This runs Flower's
own SuperNode, same arguments, with every pause of its message loop capped at
:data:`IDLE_WAIT_S`. The price is more requests to the SuperLink from an idle site (one
every :data:`IDLE_WAIT_S` instead of every 3 s).

It also finishes, as failed, the task of a message whose run stops while the SuperNode
receives it (a SuperLink restarted mid-round): Flower leaves that task open, and the site's
one ClientApp process (:mod:`fedgray.fl.clientapp.resident`) would wait on it instead of
serving the next run.

The Flower internals this reaches are in :mod:`fedgray.fl.common.flower_internals`.
"""

from __future__ import annotations

import sys

from fedgray.fl.common.flower_internals import (
    cap_supernode_pauses,
    fail_tasks_of_abandoned_messages,
)

IDLE_WAIT_S = 0.2


def main() -> None:
    """``flower-supernode`` with :data:`IDLE_WAIT_S` pauses, finishing abandoned tasks."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    cap_supernode_pauses(IDLE_WAIT_S)
    fail_tasks_of_abandoned_messages()
    sys.argv[0] = "flower-supernode"  # the name Flower's exit messages go by
    flower_supernode()


if __name__ == "__main__":
    main()
