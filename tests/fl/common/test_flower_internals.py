"""Each Flower internal fedgray reaches (fedgray/fl/common/flower_internals.py) still behaves as
fedgray relies on: these fail, naming the module to revisit, when a Flower release changes one."""

from __future__ import annotations

import ast
import copy
import inspect
from pathlib import Path

import flwr
import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp.exception import InconsistentMessageReplies

from fedgray.fl.common import flower_internals as internals

REVISIT = "revisit fedgray/fl/common/flower_internals.py"


@pytest.fixture
def no_task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process no Flower runtime has started a task in (restored afterwards)."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(internals.TaskIdentity, name, None)


def test_the_installed_flower_is_the_release_the_fence_names() -> None:
    installed = ".".join(flwr.__version__.split(".")[:2])
    assert installed == internals.FLOWER_VERSION, (
        f"Flower {flwr.__version__} is installed, the internals were checked against "
        f"{internals.FLOWER_VERSION}: {REVISIT} and this test, then update FLOWER_VERSION"
    )


@pytest.mark.usefixtures("no_task_identity")
def test_messages_need_a_task_identity_and_act_as_server_gives_the_servers() -> None:
    with pytest.raises(RuntimeError, match="TaskIdentity"):
        Message(RecordDict(), 1000, "train")
    internals.act_as_server(run_id=7)
    metadata = Message(RecordDict(), 1000, "train", group_id="3").metadata
    assert (metadata.run_id, metadata.src_node_id, metadata.dst_node_id) == (7, 0, 1000)
    assert metadata.message_id == "", f"Flower now numbers messages itself: {REVISIT}"


@pytest.mark.usefixtures("no_task_identity")
def test_an_assigned_message_id_is_what_a_reply_and_a_copy_carry() -> None:
    internals.act_as_server(run_id=1)
    sent = internals.assign_message_id(Message(RecordDict(), 1000, "train"), "m-1")
    assert sent.metadata.message_id == "m-1"
    assert copy.deepcopy(sent).metadata.message_id == "m-1"
    reply = Message(RecordDict(), reply_to=copy.deepcopy(sent))
    assert (reply.metadata.reply_to_message_id, reply.metadata.dst_node_id) == ("m-1", 0)


def test_legacy_fit_messages_round_trip_through_records() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, dtype=np.float16)]
    compat = internals.recorddict_compat
    fitins = FitIns(ndarrays_to_parameters(arrays), {"round": 3, "keys": '["a", "b"]'})
    back_in = compat.recorddict_to_fitins(compat.fitins_to_recorddict(fitins, True), True)
    assert back_in.config == fitins.config
    fitres = FitRes(Status(Code.OK, "trained"), ndarrays_to_parameters(arrays), 12, {"loss": 0.5})
    back = compat.recorddict_to_fitres(compat.fitres_to_recorddict(fitres, True), True)
    assert (back.num_examples, back.metrics, back.status.code) == (12, {"loss": 0.5}, Code.OK)
    for got, want in zip(parameters_to_ndarrays(back.parameters), arrays, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_the_secagg_workflow_state_holds_what_secure_training_reads() -> None:
    state = internals.WorkflowState()
    assert (state.nid_to_proxies, state.legacy_results, state.failures) == ({}, [], [])
    proxy = internals.GridClientProxy(node_id=1001, grid=None, run_id=0)  # type: ignore[arg-type]
    assert proxy.node_id == 1001
    setup = inspect.signature(SecAggPlusWorkflow.setup_stage).parameters
    assert list(setup) == ["self", "grid", "context", "state"], REVISIT
    context = LegacyContext(Context(0, 0, {}, RecordDict(), {}))
    context.state.config_records[internals.MAIN_CONFIGS_RECORD] = ConfigRecord(
        {internals.WorkflowKey.CURRENT_ROUND: 3}
    )
    context.state.array_records[internals.MAIN_PARAMS_RECORD] = ArrayRecord()
    assert len(context.state) == 2


def test_fedavgs_metric_average_and_reply_check() -> None:
    replies = [
        RecordDict({"m": MetricRecord({"loss": 1.0, "n": 1}), "a": ArrayRecord()}),
        RecordDict({"m": MetricRecord({"loss": 4.0, "n": 3}), "a": ArrayRecord()}),
    ]
    average = internals.aggregate_metricrecords(replies, "n")
    assert average["loss"] == 3.25  # (1 * 1 + 4 * 3) / 4: exact in binary floating point
    internals.validate_message_reply_consistency(replies, "n", check_arrayrecord=False)
    unweighted = [*replies, RecordDict({"m": MetricRecord({"loss": 2.0})})]
    with pytest.raises(InconsistentMessageReplies, match="same keys"):
        internals.validate_message_reply_consistency(unweighted, "n", check_arrayrecord=False)


def _calls(module: object, name: str) -> list[ast.Call]:
    """The calls of ``name`` (looked up as a global) inside ``module``'s functions."""
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    return [
        node
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def test_the_superexec_loop_takes_its_executor_where_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flwr.supercore.superexec.run_superexec as loop

    monkeypatch.setattr(loop, "get_executor", loop.get_executor)  # restored afterwards
    assert _calls(loop, "get_executor"), f"the SuperExec no longer asks get_executor: {REVISIT}"
    executor = object()
    internals.use_executor(executor)
    assert loop.get_executor() is executor


def _sleeps(module: object) -> list[ast.Call]:
    """The ``time.sleep(...)`` calls in ``module``."""
    return [
        call
        for call in ast.walk(ast.parse(inspect.getsource(module)))  # type: ignore[arg-type]
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "sleep"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "time"
    ]


def test_the_supernode_loop_pauses_through_the_time_module_it_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import flwr.supernode.start_client_internal as loop

    assert loop.time is time, f"the SuperNode loop no longer imports time: {REVISIT}"
    monkeypatch.setattr(loop, "time", time)  # restored afterwards
    pauses = {ast.literal_eval(call.args[0]) for call in _sleeps(loop)}
    # 3 s after an empty request to the SuperLink, 0.5 s between looks for the reply
    assert pauses == {internals.SUPERLINK_PAUSE_S, 0.5}, f"the loop's pauses changed: {REVISIT}"
    internals.cap_supernode_pauses(1.0, local_s=0.01)
    started = time.monotonic()
    loop.time.sleep(0.5)  # a look for the reply: capped at 0.01 s
    assert time.monotonic() - started < 0.4  # generous for a busy machine
    started = time.monotonic()
    loop.time.sleep(3.0)  # an idle request to the SuperLink: capped at 1 s
    assert 0.9 < time.monotonic() - started < 2.5
    assert loop.time.monotonic() > 0  # the rest of the module is time's own


def test_the_superexec_loop_pauses_through_the_time_module_it_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    import flwr.supercore.superexec.run_superexec as loop

    assert loop.time is time, f"the SuperExec loop no longer imports time: {REVISIT}"
    monkeypatch.setattr(loop, "time", time)  # restored afterwards
    waits = [ast.unparse(call.args[0]) for call in _sleeps(loop)]
    assert waits == ["task_poll_interval"], f"the SuperExec loop's pause changed: {REVISIT}"
    asked: list[float] = []
    internals.wait_between_tasks(asked.append)
    loop.time.sleep(1.5)
    assert asked == [1.5] and loop.time.monotonic() > 0


def test_a_clientapp_task_pulls_its_message_through_the_step_whose_backoff_a_site_shortens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flwr.supernode.runtime.run_clientapp as task

    assert _calls(task, "pull_and_inflate_object_from_tree"), REVISIT
    step = inspect.signature(task.pull_and_inflate_object_from_tree).parameters
    assert {"initial_backoff", "backoff_cap"} <= set(step), REVISIT
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(
        task, "pull_and_inflate_object_from_tree", lambda *a, **kw: calls.append(kw)
    )
    internals.retry_object_pulls_sooner(0.02, 0.2)
    task.pull_and_inflate_object_from_tree("tree", "pull", "confirm", return_type=Message)
    assert calls == [{"return_type": Message, "initial_backoff": 0.02, "backoff_cap": 0.2}]


def test_a_bundles_folder_is_named_by_its_id_version_and_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    folder = internals.get_project_dir("fedgray/fedgray", "0.1.0", "ab" * 32)
    assert folder.is_relative_to(tmp_path) and "0.1.0" in folder.name
    assert folder.name.startswith("fedgray.fedgray.") and "abab" in folder.name


def test_the_supernode_loop_receives_through_the_step_a_site_wraps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flwr.supernode.start_client_internal as loop

    steps = _calls(loop, "_pull_and_store_message")
    assert steps, f"the SuperNode loop no longer receives through this step: {REVISIT}"
    for step in steps:  # the wrapper takes these by keyword
        named = {keyword.arg for keyword in step.keywords}
        assert not step.args and {"state", "object_store", "receive"} <= named, REVISIT
    monkeypatch.setattr(loop, "_pull_and_store_message", loop._pull_and_store_message)
    flowers = loop._pull_and_store_message
    internals.fail_tasks_of_abandoned_messages()
    assert loop._pull_and_store_message is not flowers


def test_the_supernode_says_when_a_message_is_in_and_not_after_an_empty_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flwr.supernode.start_client_internal as loop

    received = iter([None, 7, None, 8])  # run ids Flower's step returns (None: no message)
    monkeypatch.setattr(loop, "_pull_and_store_message", lambda **_: next(received))
    rings: list[str] = []
    internals.after_each_message(lambda: rings.append("ring"))
    got = [loop._pull_and_store_message(state=None, object_store=None, receive=None)]
    got += [loop._pull_and_store_message(state=None, object_store=None, receive=None)]
    assert (got, rings) == ([None, 7], ["ring"])
    got += [loop._pull_and_store_message(state=None, object_store=None, receive=None)]
    got += [loop._pull_and_store_message(state=None, object_store=None, receive=None)]
    assert (got, rings) == ([None, 7, None, 8], ["ring", "ring"])
