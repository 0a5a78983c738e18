"""A Ray-free, in-process Grid: the ClientApp runs in this process, node after node.

Built on Flower's public ``Grid``, ``Message`` and ``Context`` (and the two internals an
in-process grid needs, :mod:`fedgray.fl.common.flower_internals`); used by the tests, the
memory benchmark and the privacy-utility sweep (:func:`run_local`). Like the real runtime
it copies messages both ways (clients cannot alias server arrays), keeps one ``Context``
per node (``context.state`` persists between messages; a client that raises loses that
message's state changes) and turns exceptions into error replies. With ``record`` it keeps
every message it delivered (``sent``) and every reply (``received``) for inspection;
without, it holds none, as the real runtime does once the ServerApp has pulled them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedgray.config import Config
from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.common.flower_internals import Run, act_as_server, assign_message_id
from fedgray.fl.common.packing import unpack
from fedgray.fl.serverapp.app import make_server_app
from fedgray.fl.serverapp.server import Echo, FederationResult

FIRST_NODE_ID = 1000


class LocalGrid(Grid):
    """``num_nodes`` simulated nodes with partition ids ``0 .. num_nodes - 1``."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_config: dict[str, Any] | None = None,
        record: bool = True,
    ) -> None:
        self.app, self.record = client_app, record
        act_as_server(run_id=1)
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        self.sent: list[Message] = []
        self.received: list[Message] = []
        self._queue: list[Message] = []  # pushed, not yet pulled

    def set_run(self, run: Run) -> None:
        """Not needed in-process."""

    @property
    def run(self) -> Any:
        """Not available in-process."""
        raise NotImplementedError

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A message for ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue ``messages`` for :meth:`pull_messages`; their ids."""
        queued = [self._numbered(msg) for msg in messages]
        self._queue.extend(queued)
        return [msg.metadata.message_id for msg in queued]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the ClientApp on the first queued message among ``message_ids``: one reply a
        pull (none when none of them waits), so a server that folds replies as they
        arrive holds one at a time."""
        wanted = set(message_ids)
        for i, msg in enumerate(self._queue):
            if msg.metadata.message_id in wanted:
                return [self._deliver(self._queue.pop(i))]
        return []

    def get_node_ids(self) -> list[int]:
        """Ids of all simulated nodes."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Run the ClientApp on each message in turn and return the replies."""
        return [self._deliver(self._numbered(msg)) for msg in messages]

    @staticmethod
    def _numbered(msg: Message) -> Message:
        """``msg`` with a fresh message id, as a SuperLink gives it when pushed."""
        return assign_message_id(msg, str(uuid4()))

    def _deliver(self, msg: Message) -> Message:
        """The ClientApp's reply to (a copy of) ``msg`` in its node's context."""
        inbound = copy.deepcopy(msg)
        node = msg.metadata.dst_node_id
        context = copy.deepcopy(self.contexts[node])
        try:
            reply = self.app(inbound, context)
            self.contexts[node] = context
        except Exception as error:  # noqa: BLE001 - Flower makes these error replies too
            reason = f"{type(error).__name__}: {error}"
            reply = Message(Error(code=0, reason=reason), reply_to=inbound)
        if self.record:  # as the site got and sent them (the server may let arrays go)
            self.sent.append(_unpacked(msg))
            self.received.append(_unpacked(reply))
        return reply


def _unpacked(message: Message) -> Message:
    """A copy of ``message`` with its arrays as they were before packing (what the records
    show: the arrays that travel, not their wire layout; see
    :mod:`fedgray.fl.common.packing`)."""
    message = copy.deepcopy(message)
    if not message.has_error():
        unpack(message.content)
    return message


def run_local(
    config: Config,
    *,
    echo: Echo = lambda _: None,
    run_config: dict[str, Any] | None = None,
    record: bool = True,
) -> tuple[FederationResult, dict[str, Any], LocalGrid]:
    """Run ``config``'s ServerApp against a LocalGrid of ``federation.num_sites`` nodes.

    ``run_config`` (Flower's ``context.run_config``) goes to the server and to every site
    alike, so that both resolve the same config. ``record``: the grid keeps every message
    (see :class:`LocalGrid`). Returns the result, the summary (as ``fedgray run`` writes
    it) and the grid.
    """
    out: dict[str, Any] = {}
    num_sites = config.federation.num_sites
    grid = LocalGrid(make_client_app(config), num_sites, run_config=run_config, record=record)
    app = make_server_app(config, echo=echo, on_result=lambda r, s: out.update(result=r, summary=s))
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config or {}
    )
    app(grid, context)
    return out["result"], out["summary"], grid
