"""A site's ClientApp process that lives as long as its SuperNode and serves every message.

Flower 1.42's SuperExec hands each message a SuperNode receives to an executor, and its one
local executor starts a ``flwr-clientapp`` process per message: torch, the sealed backbone
and the site's data would load again for each of SecAgg+'s four stages of every round.
This module is ``flower-superexec`` itself (its task loop, its SuperExec authentication
with the role's secret, its parent-process watch and signal handling) with one part
replaced: the executor, which runs each ClientApp task here, in this process, one at a
time. The per-process caches (:mod:`fedgray.fl.common.cache`) then hold the backbone and
data from a run's first message to its last; they are emptied when a message of another
run arrives, so that each run opens the site's files afresh (a replaced artifact, new
data).

A task runs as Flower's ``flwr-clientapp`` runs it (:func:`run_task`: pull the message,
context and bundle with the task's token, install the bundle, call the app, push the reply
and the updated context), except that the app is the one
:func:`fedgray.fl.clientapp.trusted.trusted_app` allows: fedgray's own, never code from
the bundle. Each task writes one line naming this process to the SuperNode's log.

What ends a ``flwr-clientapp`` process ends only the task here, never this process: a task
token the SuperNode no longer accepts (it finished the task, or the task's run stopped)
fails the task's calls (:func:`task_retry_invoker`), where Flower's client signals its own
process to exit; and a reply that cannot be pushed is logged, as ``flwr-clientapp`` logs
it.

Between tasks the process sleeps on the site's doorbell (:mod:`fedgray.launch.doorbell`,
named by ``FEDGRAY_DOORBELL``), which the SuperNode rings once a message is in: it asks for
the task at once and costs nothing while the site is idle, asking on its own only every
:data:`BELL_FALLBACK_S`. Without a bell it asks every :data:`TASK_POLL_S`. A task taken
while the SuperNode still receives its message retries the missing objects every
:data:`OBJECT_RETRY_S` (up to :data:`OBJECT_RETRY_CAP_S`), not Flower's 1 s doubling to 10 s.

The Flower internals this reaches are listed, and checked, in
:mod:`fedgray.fl.common.flower_internals`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from logging import ERROR
from pathlib import Path

import httpx
from flwr.app import Context, Error, Message
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import LoadClientAppError
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore import log
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import RetryInvoker, make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedgray.fl.clientapp.trusted import trusted_app
from fedgray.fl.common.cache import forget
from fedgray.fl.common.flower_internals import (
    retry_object_pulls_sooner,
    use_executor,
    wait_between_tasks,
)
from fedgray.launch.doorbell import BELL_ENV, Bell

SERVED = "fedgray site: ClientApp process {pid} served message {count} of run {run_id}"
"""The line each task writes to the SuperNode's log (its process, and how many messages of
the run that process has served)."""
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # read by Flower 1.42's SuperExec loop
TASK_POLL_S = 0.1
"""Seconds between this process's requests for a task without a doorbell (Flower's default:
1 s, which a message would wait half of on average; a request is one loopback call)."""
BELL_FALLBACK_S = 1.0
"""Seconds between this process's requests for a task when the doorbell stays silent."""
OBJECT_RETRY_S = 0.02
OBJECT_RETRY_CAP_S = 0.2


REFUSED_TOKEN = frozenset({httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN})
"""What the SuperNode answers a task's call with once the task is over (finished, expired, or
its run no longer running)."""


def task_retry_invoker() -> RetryInvoker:
    """Flower's retry policy for a task's calls to the SuperNode, except that a refused task
    token fails the call at once. Flower's policy sends this process SIGINT (401) or raises
    an exception no task handler catches (403): right for ``flwr-clientapp``, which is the
    task, and fatal here, where the process serves the site's every later task."""
    invoker = make_simple_http_retry_invoker()
    flowers = invoker.should_giveup

    def should_giveup(error: Exception) -> bool:
        if isinstance(error, httpx.HTTPStatusError):
            if error.response.status_code in REFUSED_TOKEN:
                return True
        return flowers is not None and flowers(error)

    invoker.should_giveup = should_giveup
    return invoker


def run_task(client: RuntimeHttpClient, *, on_run: Callable[[int], None]) -> None:
    """One ClientApp task through ``client`` (authenticated with the task's token), as
    ``flwr-clientapp`` runs it, calling ``on_run(run_id)`` once the task's message is in.
    An exception of the app becomes an error reply and a failed task, as there."""
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        message, context, run, fab = pull_task_input(client)
        on_run(context.run_id)
        install_from_fab(fab.content, skip_prompt=True)
        app = trusted_app(run.fab_id, run.fab_version, fab.hash_str)
        reply = app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # the app's failure is the task's, never the process's
        log(ERROR, "ClientApp raised an exception", exc_info=error)
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        details = f"{type(error)}:<'{error}'>"
        if isinstance(error, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as error:  # the reply is lost, the process serves on
            log(ERROR, "Failed to push reply message", exc_info=error)
        push_task_output(client, context, status, details)  # logs its own failure
        if heartbeat.is_running:  # not when its thread ended on a refused token
            heartbeat.stop()


class ResidentExecutor:
    """Flower's executor protocol, running ClientApp tasks in this process one at a time
    (and accepting no other kind of task)."""

    def __init__(self) -> None:
        self.run_id: int | None = None
        self.served = 0

    def get_eligible_capacity(
        self, supported_task_types: set[TaskType], **_tls: object
    ) -> tuple[set[TaskType], set[str]]:
        """ClientApp tasks only, whenever asked: the loop asks only between tasks."""
        return supported_task_types & {TaskType.CLIENT_APP}, set()

    def wait_for_capacity(self, *_args: object, **_kwargs: object) -> None:
        """Nothing to wait for: :meth:`launch` returns when its task is done."""

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        """Run the task ``spec`` names, here, to its end."""
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"this site runs ClientApp tasks only, not {spec.task_type}")
        retry = task_retry_invoker()
        client = RuntimeHttpClient.from_server_address(
            server_address=spec.runtime_api_address,
            insecure=spec.insecure,
            root_certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(spec.token),
            ],
            retry_invoker=retry,
        )
        try:
            run_task(client, on_run=self.enter)
        finally:
            client.close()
        print(SERVED.format(pid=os.getpid(), count=self.served, run_id=self.run_id), flush=True)
        return LaunchResult.accepted()

    def enter(self, run_id: int) -> None:
        """A message of run ``run_id`` is in: count it, and empty the per-process caches
        when it belongs to another run than the last one."""
        if run_id != self.run_id:
            forget()
            self.run_id, self.served = run_id, 0
        self.served += 1

    def reconcile(self) -> None:
        """Nothing to maintain between polls."""

    def close(self) -> None:
        """Nothing to release: the tasks ran in this process."""


def main() -> None:
    """``flower-superexec`` (same arguments) with :class:`ResidentExecutor`, sleeping on
    the doorbell ``FEDGRAY_DOORBELL`` names (if any) between its requests."""
    from flwr.supercore.cli.flower_superexec import flower_superexec

    poll = TASK_POLL_S
    if bell := os.environ.get(BELL_ENV):
        wait_between_tasks(Bell(Path(bell)).wait)
        poll = BELL_FALLBACK_S
    os.environ.setdefault(TASK_POLL_ENV, str(poll))
    retry_object_pulls_sooner(OBJECT_RETRY_S, OBJECT_RETRY_CAP_S)
    use_executor(ResidentExecutor())
    sys.argv[0] = "flower-superexec"  # the name Flower's exit messages go by
    flower_superexec()


if __name__ == "__main__":
    main()
