"""Every part of Flower that fedgray uses although Flower does not publish it, in one place.

Written against Flower 1.42 (:data:`FLOWER_VERSION`); ``tests/fl/common/test_flower_internals.py``
checks each one's behaviour against the installed Flower and fails naming this module when
one changes, so that an upgrade of Flower is this file and its test. Where Flower offers a
public way, fedgray takes it instead (a message's copy is ``copy.deepcopy``; grids, apps,
records and strategies are Flower's public classes).

What is reached, and why no public API serves:

- :class:`TaskIdentity`: ``Message(content, dst_node_id, message_type)`` reads the sender's
  run, node and task from it; Flower's runtimes set it when they start an app, so an
  in-process grid must set it itself (:func:`act_as_server`).
- ``Metadata.message_id`` has no setter: the SuperLink writes ``_message_id`` into the
  metadata's ``__dict__`` when a message is pushed, and so does an in-process grid
  (:func:`assign_message_id`).
- SecAgg+ runs only on Flower's legacy API, whose pieces fedgray drives from its own round
  loop: the workflow's per-round :class:`WorkflowState` (the sites' Fit results and
  failures), :class:`GridClientProxy` (a legacy client over a Grid), the workflow's record
  names (:data:`MAIN_CONFIGS_RECORD`, :data:`MAIN_PARAMS_RECORD`, :class:`WorkflowKey`) and
  ``recorddict_compat`` (legacy Fit messages to and from records, which ``secaggplus_mod``
  speaks).
- ``strategy_utils``: the weighted metric average and the reply check of Flower's own
  ``FedAvg``, reused so that fedgray's strategies average and refuse exactly as it does.
- A site's one long-lived ClientApp process (:mod:`fedgray.fl.clientapp.resident`): the
  SuperExec's ``get_executor`` in its task loop, replaced by one that runs each task in
  that process (:func:`use_executor`), the executor protocol, and ``run_clientapp``'s
  helpers that pull a task's message and push its reply; ``get_project_dir``, where the
  bundle is installed.
- The SuperNode's message loop takes its pauses from the ``time`` module it imported
  (``start_client_internal.time``): 3 s after an empty request to the SuperLink, 0.5 s
  between looks at its own state for the ClientApp's reply; a site shortens both
  (:func:`cap_supernode_pauses`).
- The same loop receives each message through ``start_client_internal._pull_and_store_message``,
  which leaves a task behind when the message's run stops while its objects are pulled; a
  site finishes that task (:func:`fail_tasks_of_abandoned_messages`), and says when a
  message is in (:func:`after_each_message`).
- The SuperExec's task loop pauses through the ``time`` module it imported
  (``run_superexec.time``); a site's ClientApp process waits on its SuperNode's bell instead
  (:func:`wait_between_tasks`).
- A ClientApp task creates its task before the SuperNode has the message's objects, and
  ``run_clientapp.pull_task_input`` pulls them with Flower's backoff (1 s, doubling to 10 s)
  through ``pull_and_inflate_object_from_tree``; a site's one process retries sooner
  (:func:`retry_object_pulls_sooner`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import flwr.compat.common.recorddict_compat as recorddict_compat
from flwr.app import Message
from flwr.common.config import get_project_dir
from flwr.common.constant import Status, SubStatus
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp.strategy.strategy_utils import (
    aggregate_metricrecords,
    validate_message_reply_consistency,
)
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

FLOWER_VERSION = "1.42"
"""The Flower release (major.minor) every name here was checked against."""

SERVER_NODE_ID = 0
"""The node id Flower's runtimes give the ServerApp's side."""

__all__ = [
    "FLOWER_VERSION",
    "MAIN_CONFIGS_RECORD",
    "MAIN_PARAMS_RECORD",
    "GridClientProxy",
    "Run",
    "TaskIdentity",
    "WorkflowKey",
    "WorkflowState",
    "act_as_server",
    "aggregate_metricrecords",
    "assign_message_id",
    "after_each_message",
    "cap_supernode_pauses",
    "fail_tasks_of_abandoned_messages",
    "get_project_dir",
    "recorddict_compat",
    "retry_object_pulls_sooner",
    "use_executor",
    "validate_message_reply_consistency",
    "wait_between_tasks",
]


def act_as_server(run_id: int) -> None:
    """Make this process the ServerApp's task of run ``run_id``, as Flower's runtimes do
    before they start an app (``flwr.server.compat.app``): messages created from here on
    are sent from the server's node in that run."""
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SERVER_NODE_ID


def assign_message_id(message: Message, message_id: str) -> Message:
    """``message`` with ``message_id``, as the SuperLink gives one when it is pushed."""
    message.metadata.__dict__["_message_id"] = message_id
    return message


def use_executor(executor: object) -> None:
    """Make the SuperExec's task loop (``flower-superexec``, started in this process) hand
    every task to ``executor``: the loop looks ``get_executor`` up in its own module."""
    import flwr.supercore.superexec.run_superexec as loop

    loop.get_executor = lambda *_args, **_kwargs: executor  # type: ignore[assignment]


class _Paused:
    """The ``time`` module with another ``sleep``: what a Flower loop that pauses through
    ``time.sleep`` is given to pause otherwise."""

    def __init__(self, sleep: Callable[[float], None]) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


SUPERLINK_PAUSE_S = 3.0
"""The SuperNode loop's pause after asking the SuperLink for a message and getting none
(its other pauses, 0.5 s, are between looks at its own state)."""


def cap_supernode_pauses(idle_s: float, *, local_s: float) -> None:
    """Cap the pauses of the SuperNode's message loop (``flower-supernode``, started in
    this process): at ``idle_s`` between its requests to the SuperLink, at ``local_s``
    between its looks at its own state for the ClientApp's reply (no request: cheap)."""
    import flwr.supernode.start_client_internal as loop

    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, idle_s if seconds >= SUPERLINK_PAUSE_S else local_s))

    loop.time = _Paused(sleep)  # type: ignore[assignment]


def wait_between_tasks(wait: Callable[[float], None]) -> None:
    """Make the SuperExec's task loop (``flower-superexec``, started in this process) pause
    between its requests for a task with ``wait(interval)``, which may return early."""
    import flwr.supercore.superexec.run_superexec as loop

    loop.time = _Paused(wait)  # type: ignore[assignment]


def retry_object_pulls_sooner(initial_s: float, cap_s: float) -> None:
    """Make ClientApp tasks run in this process (``run_clientapp.pull_task_input``) retry a
    message object the SuperNode does not hold yet after ``initial_s``, doubling to
    ``cap_s``, instead of Flower's 1 s doubling to 10 s: the task is handed out before the
    SuperNode has received the message, and a process that takes it at once would sleep
    seconds after the objects came."""
    import flwr.supernode.runtime.run_clientapp as task

    pull = task.pull_and_inflate_object_from_tree
    task.pull_and_inflate_object_from_tree = functools.partial(
        pull, initial_backoff=initial_s, backoff_cap=cap_s
    )


def after_each_message(call: Callable[[], None]) -> None:
    """Make the SuperNode's message loop (``flower-supernode``, started in this process)
    ``call()`` once each message it receives is stored with all its objects (and its task
    created), before it waits for the ClientApp's reply."""
    import flwr.supernode.start_client_internal as loop

    receive_and_store = loop._pull_and_store_message

    def received(**kwargs: Any) -> Any:
        run_id = receive_and_store(**kwargs)
        if run_id is not None:
            call()
        return run_id

    loop._pull_and_store_message = received  # type: ignore[assignment]


ABANDONED = "its run stopped while the SuperNode received the message"
"""The reason a task of an abandoned message is finished with (the task's details)."""
UNFINISHED = (Status.PENDING, Status.STARTING, Status.RUNNING)


def fail_tasks_of_abandoned_messages() -> None:
    """Make the SuperNode's message loop (``flower-supernode``, started in this process) finish
    the task of a message it abandons because the message's run stopped.

    The loop creates a message's ClientApp task before it pulls the message's objects from
    the SuperLink. When the run stops meanwhile (a restarted SuperLink reports the run as no
    longer running), Flower 1.42 ignores the message but leaves its task unfinished and its
    objects registered and empty: the ClientApp that took the task waits for them (for up to
    two hours), and a site whose one long-lived process runs tasks one at a time serves no
    other message meanwhile. This fails that task and drops the message and its objects, as
    the loop itself does when a pull fails for another reason."""
    import flwr.supernode.start_client_internal as loop

    receive_and_store = loop._pull_and_store_message

    def pull_or_fail(
        *, state: Any, object_store: Any, receive: Callable[[], Any], **rest: Any
    ) -> Any:
        received: list[Message] = []
        before: set[Any] = set()  # the unfinished tasks when a message came (none: no query)

        def receive_noted() -> Any:
            got = receive()
            if got is not None:
                received.append(got[0])
                before.update(task.task_id for task in state.get_tasks(statuses=UNFINISHED))
            return got

        run_id = receive_and_store(
            state=state, object_store=object_store, receive=receive_noted, **rest
        )
        if run_id is None and received:
            left = [t for t in state.get_tasks(statuses=UNFINISHED) if t.task_id not in before]
            if left:
                message_id = received[0].metadata.message_id
                state.delete_messages(message_ids=[message_id])
                object_store.delete(message_id)
                for task in left:
                    state.finish_task(task.task_id, sub_status=SubStatus.FAILED, details=ABANDONED)
        return run_id

    loop._pull_and_store_message = pull_or_fail  # type: ignore[assignment]
