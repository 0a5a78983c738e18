"""A run that stops while a site receives its message leaves nothing for the site's one
long-lived ClientApp process to wait on: the SuperNode finishes the message's task, and the
task's refused token ends that task's calls at once without stopping the process.

The blocking situation is rebuilt in memory: Flower's own SuperNode loop step and node state,
a SuperLink that answers the object pull with "run not running" (as one restarted on its
database does for a run killed mid-round), and the ClientApp taking the task meanwhile."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import httpx
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_object_tree
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.supercore.run import Run, RunNotRunningException
from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

from fedgray.fl.clientapp.resident import task_retry_invoker
from fedgray.fl.common import flower_internals as internals

RUN_ID, NODE_ID = 11, 5


@pytest.fixture
def supernode_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Flower's SuperNode loop module with the abandoned-task fix installed (undone afterwards)."""
    import flwr.supernode.start_client_internal as loop

    monkeypatch.setattr(loop, "_pull_and_store_message", loop._pull_and_store_message)
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(internals.TaskIdentity, name, None)
    internals.fail_tasks_of_abandoned_messages()
    yield loop


def _receive_a_message_whose_run_stops(loop: object) -> tuple[InMemoryNodeState, str, str]:
    """The loop's step on a message of a run the SuperLink stops while the SuperNode pulls
    the message's objects, the ClientApp having taken the task before the pull failed:
    the node state, the message's id and the ClientApp's task token."""
    state = InMemoryNodeState(InMemoryObjectStore())
    state.set_node_id(NODE_ID)
    state.store_run(Run.create_empty(RUN_ID))
    internals.act_as_server(RUN_ID)
    message = Message(RecordDict({"config": ConfigRecord({"lr": 0.1})}), NODE_ID, "train")
    internals.assign_message_id(message, message.object_id)
    inbox = [(message, get_object_tree(message))]
    tokens: list[str] = []

    def pull_object(run_id: int, object_id: str) -> bytes:
        # the site's ClientApp process takes the task as the SuperExec gives it, at once
        (task,) = state.get_tasks(run_ids=[run_id])
        token = state.claim_task(task.task_id)
        assert token is not None and state.activate_task(task.task_id)
        tokens.append(token)
        raise RunNotRunningException

    got = loop._pull_and_store_message(  # type: ignore[attr-defined]
        state=state,
        object_store=state.object_store,
        node_config={},
        receive=lambda: inbox.pop() if inbox else None,
        get_run=lambda run_id: pytest.fail("the run is known"),
        get_fab=lambda fab_hash, run_id: pytest.fail("the run is known"),
        pull_object=pull_object,
        confirm_message_received=lambda run_id, message_id: None,
        trusted_entities=None,
    )
    assert got is None, "the message of a stopped run is ignored"
    return state, message.metadata.message_id, tokens[0]


def test_the_task_of_a_message_whose_run_stopped_is_finished_and_its_token_refused(
    supernode_loop: object,
) -> None:
    state, message_id, token = _receive_a_message_whose_run_stops(supernode_loop)

    (task,) = state.get_tasks(run_ids=[RUN_ID])
    assert (task.status.status, task.status.sub_status) == ("finished", "failed")
    assert task.status.details == internals.ABANDONED
    # what the ClientApp holding the task would wait on is gone: its token is refused (its
    # next call fails), the message cannot be pulled again, its objects are dropped
    assert state.get_task_by_token(token) is None
    assert state.get_messages_legacy(run_ids=[RUN_ID], is_reply=False) == []
    assert state.object_store.get(message_id) is None


def test_the_next_message_is_received_after_an_abandoned_one(supernode_loop: object) -> None:
    state, _, _ = _receive_a_message_whose_run_stops(supernode_loop)
    assert state.get_tasks(statuses=internals.UNFINISHED) == []
    nothing = supernode_loop._pull_and_store_message(  # type: ignore[attr-defined]
        state=state,
        object_store=state.object_store,
        node_config={},
        receive=lambda: None,
        get_run=lambda run_id: pytest.fail("nothing received"),
        get_fab=lambda fab_hash, run_id: pytest.fail("nothing received"),
        pull_object=lambda run_id, object_id: pytest.fail("nothing received"),
        confirm_message_received=lambda run_id, message_id: None,
        trusted_entities=None,
    )
    assert nothing is None and len(state.get_tasks()) == 1  # an idle poll touches nothing


@pytest.mark.parametrize("refusal", [httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN])
def test_a_refused_task_token_fails_the_call_at_once_and_leaves_the_process_serving(
    refusal: int,
) -> None:
    signals: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    request = httpx.Request("POST", "http://127.0.0.1:9094/flwr.proto.Runtime/PullObject")
    calls: list[int] = []

    def call() -> None:
        calls.append(refusal)
        response = httpx.Response(refusal, request=request)
        raise httpx.HTTPStatusError("task token refused", request=request, response=response)

    try:
        with pytest.raises(httpx.HTTPStatusError):
            task_retry_invoker().invoke(call)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [refusal] and signals == []


def test_other_failures_are_still_retried_as_flower_retries_them() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9094/flwr.proto.Runtime/PullObject")
    answers = [httpx.Response(503, request=request), httpx.Response(200, request=request)]

    def call() -> int:
        response = answers.pop(0)
        if response.status_code != 200:
            raise httpx.HTTPStatusError("unavailable", request=request, response=response)
        return response.status_code

    invoker = task_retry_invoker()
    invoker.wait_function = lambda _seconds: None  # no backoff pause in a test
    assert invoker.invoke(call) == 200 and answers == []
