"""Which site failures a federated run tolerates, and which end it.

A site that fails (an exception in its ClientApp, no reply within
``federation.round_timeout``) is left out of its round, and the round goes on with the others:
one hospital's outage must not stop the federation. The run ends, with
:class:`FederationError` and a non-zero exit, when a phase has nothing to go on: no site's
training reply could be aggregated, or no site could evaluate. Budget refusals
(:data:`~fedgray.fl.common.private.BUDGET_EXHAUSTED`) are not failures:
``privacy.on_budget`` decides.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

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


def failures(replies: Iterable[Message], *, sent: int) -> list[str]:
    """Short reasons of the failed replies (budget refusals excluded), one per missing reply."""
    replies = list(replies)
    reasons = [
        short_reason(m.error.reason)
        for m in replies
        if m.has_error() and m.error.code != BUDGET_EXHAUSTED
    ]
    missing = max(0, sent - len(replies))
    return reasons + ["no reply within federation.round_timeout"] * missing


def describe(reasons: list[str]) -> str:
    """``3 sites: ValueError: ...`` for the most frequent reason, and how many others."""
    first = max(dict.fromkeys(reasons), key=reasons.count)
    others = len(reasons) - reasons.count(first)
    tail = f" (and {others} other failure{'s' * (others != 1)})" if others else ""
    count = reasons.count(first)
    return f"{count} site{'s' * (count != 1)}: {first}{tail}"


def check_phase(phase: str, server_round: int, *, reasons: list[str], usable: int) -> str | None:
    """Raise :class:`FederationError` when ``phase`` of a round has no usable reply and
    sites failed; otherwise a warning line when some failed (None when none did)."""
    if not reasons:
        return None
    if usable == 0:
        raise FederationError(f"round {server_round}: no site could {phase}; {describe(reasons)}")
    return f"round {server_round}: {len(reasons)} failed to {phase}, left out: {describe(reasons)}"


def wait_for_sites(grid: Grid, num_sites: int, *, timeout: float, poll: float = 1.0) -> None:
    """Wait until ``num_sites`` nodes are connected; :class:`FederationError` after
    ``timeout`` seconds. Flower's strategies would wait for them forever: a federation
    started with fewer SuperNodes than ``federation.num_sites`` (``flwr run`` on a local
    SuperLink simulates 2 unless told otherwise) must fail, not hang."""
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < num_sites:
        if time.monotonic() >= deadline:
            raise FederationError(
                f"federation.num_sites: {num_sites} sites configured, {connected} connected "
                f"after {timeout:g} s (federation.round_timeout); start as many SuperNodes, "
                "or set the simulation's num-supernodes to match"
            )
        time.sleep(poll)
