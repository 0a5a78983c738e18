"""Which site failures a federated run tolerates, and which end it.

A site that fails (an exception in its ClientApp, no reply within
``federation.round_timeout``) is left out of its round, and the round goes on with the others:
one hospital's outage must not stop the federation. The warning names each site left out
(its name and node id, see :mod:`fedgray.fl.serverapp.roster`) and why. The run ends, with
:class:`FederationError` and a non-zero exit, when a phase has nothing to go on: no site's
training reply could be aggregated, or no site could evaluate. Budget refusals
(:data:`~fedgray.fl.common.private.BUDGET_EXHAUSTED`) are not failures:
``privacy.on_budget`` decides.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.serverapp import Grid

from fedgray.fl.common.private import BUDGET_EXHAUSTED

_EXCEPTION_LINE = re.compile(
    r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exhausted|Interrupt))\b:?\s*(.*)$"
)
_WRAPPERS = {"ClientAppException", "RayTaskError", "Exception"}
MAX_REASON = 300


class FederationError(RuntimeError):
    """A federated run that cannot give what was asked for; the message is one line."""


def short_reason(reason: str | None) -> str:
    """The innermost ``Type: message`` line of an error reply's reason (Flower's reasons
    hold whole tracebacks, wrapped by Ray and by Flower's ``ClientAppException``; an
    ``Error`` may also have none)."""
    lines = [line.strip() for line in (reason or "").splitlines() if line.strip()]
    found = None
    for line in lines:
        match = _EXCEPTION_LINE.match(line)
        if match and match.group(1) not in _WRAPPERS and match.group(2):
            found = f"{match.group(1)}: {match.group(2)}"
    text = found or (lines[-1] if lines else "unknown error")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


NO_REPLY = "no reply within federation.round_timeout"
MAX_NAMED = 5  # sites named per reason in a warning; the rest are counted
DONE = {"train": "trained", "evaluate": "evaluated"}
Label = Callable[[int | None], str]


@dataclass(frozen=True)
class Failure:
    """One site left out of a phase: its node id (None: a failure the protocol could not
    tie to a node) and the short reason."""

    node_id: int | None
    reason: str


def failures(sent: Iterable[Message], replies: Iterable[Message]) -> list[Failure]:
    """The failed replies to ``sent`` (budget refusals excluded), and one per node that
    never replied. A reply is matched to its node by the message it answers: the errors
    Flower's SuperLink makes for an unavailable node come from the SuperLink itself."""
    nodes = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
    found, answered = [], set()
    for reply in replies:
        node = nodes.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        answered.add(node)
        if reply.has_error() and reply.error.code != BUDGET_EXHAUSTED:
            found.append(Failure(node, short_reason(reply.error.reason)))
    return found + [Failure(n, NO_REPLY) for n in nodes.values() if n not in answered]


def describe(failed: list[Failure], phase: str, label: Label) -> str:
    """``site 'site-1' (node 1001) failed to train: OSError: ...``, one clause per reason
    (the most frequent first), naming at most :data:`MAX_NAMED` sites each, in name order."""
    by_reason: dict[str, list[int | None]] = {}
    for failure in sorted(failed, key=lambda f: label(f.node_id)):  # replies come in any order
        by_reason.setdefault(failure.reason, []).append(failure.node_id)
    clauses = []
    for reason, nodes in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        names = [label(n) for n in nodes[:MAX_NAMED]]
        more = len(nodes) - len(names)
        names += [f"{more} more"] if more else []
        who = f"site {names[0]}" if len(nodes) == 1 else f"sites {', '.join(names)}"
        clauses.append(f"{who} failed to {phase}: {reason}")
    return "; ".join(clauses)


def check_phase(
    phase: str,
    server_round: int,
    *,
    failed: list[Failure],
    usable: int,
    asked: int,
    label: Label = lambda node: f"node {node}" if node is not None else "(unknown)",
) -> str | None:
    """Raise :class:`FederationError` when ``phase`` of a round has no usable reply and
    sites failed; otherwise a warning line naming the failed sites (None when none did).
    ``label`` names a node (see :meth:`fedgray.fl.serverapp.roster.Roster.label`)."""
    if not failed:
        return None
    if usable == 0:
        raise FederationError(
            f"round {server_round}: no site could {phase}; {describe(failed, phase, label)}"
        )
    done = f"{usable} of {asked} site{'s' * (asked != 1)} {DONE.get(phase, phase)}"
    return f"round {server_round}: {describe(failed, phase, label)}; {done}"


def connected_within(grid: Grid, num_sites: int, *, timeout: float, poll: float = 1.0) -> int:
    """Nodes connected once ``num_sites`` are, or once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < num_sites:
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return connected


def wait_for_nodes(grid: Grid, num_sites: int, *, timeout: float, poll: float = 1.0) -> None:
    """Wait until ``num_sites`` nodes are connected; :class:`FederationError` after
    ``timeout`` seconds. Flower's strategies would wait for them forever: a federation
    started with fewer SuperNodes than ``federation.num_sites`` (``flwr run`` on a local
    SuperLink simulates 2 unless told otherwise) must fail, not hang."""
    connected = connected_within(grid, num_sites, timeout=timeout, poll=poll)
    if connected < num_sites:
        raise FederationError(
            f"federation.num_sites: {num_sites} sites configured, {connected} connected "
            f"after {timeout:g} s (federation.round_timeout); start as many SuperNodes, "
            "or set the simulation's num-supernodes to match"
        )
