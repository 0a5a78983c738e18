"""Which site is which node, and which sites a round asks: the server's roster.

Flower addresses sites by node id, drawn at random in a simulation (a new one each run) and
assigned at registration in a deployment. The roster maps node ids to the names the sites
give (see :mod:`fedgray.fl.common.site_names`): learned from every reply, and asked once
(a ``query`` message, no arrays) of each node it has not heard from before a round samples.

Sampling is fedgray's, not Flower's: a seeded choice over the connected sites sorted by
name, with the seed from ``federation.seed``, the round and the phase only. Flower's
strategies draw with the process's ``random`` over random node ids, so a resumed run would
ask other sites than an uninterrupted one; here round ``t`` asks the same sites whether the
run was resumed or not. The strategies are then given exactly the sampled nodes
(:class:`Sampled`; built with ``presampled=True``, they take every node they are given).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedgray.fl.common.site_names import QUERY, name_in
from fedgray.fl.serverapp.exchange import arriving
from fedgray.fl.serverapp.failures import connected_within

PHASES = {"train": 0, "evaluate": 1}  # each phase draws its own sample


class Sampled:
    """``grid`` as a strategy's configure step sees it: only the sampled nodes are
    connected (everything else is forwarded)."""

    def __init__(self, grid: Grid, nodes: list[int]) -> None:
        self.grid, self.nodes = grid, list(nodes)

    def get_node_ids(self) -> list[int]:
        """The sampled nodes."""
        return list(self.nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


def sampled(grid: Grid, nodes: list[int]) -> Grid:
    """A :class:`Sampled` view of ``grid``, typed as the Grid the strategies take."""
    return cast(Grid, Sampled(grid, nodes))


def names_in(replies: Iterable[Message]) -> dict[int, str]:
    """Node id -> site name, from the (non-error) replies that carry one."""
    found = {}
    for reply in replies:
        name = name_in(reply)
        if name is not None:
            found[reply.metadata.src_node_id] = name
    return found


class Roster:
    """Node id -> site name, and the seeded sample of each round and phase.

    ``counts``: sites asked per phase (``train``, ``evaluate``) when all are connected
    (fewer when fewer are connected); a phase not in it asks every connected site. Before
    sampling, the roster waits up to ``timeout`` seconds for ``num_sites`` sites to be
    connected (a SuperNode restarted after a crash rejoins the next round, as Flower's
    strategies wait for ``min_available_nodes``), then samples those that are.
    """

    def __init__(
        self,
        *,
        timeout: float,
        seed: int = 0,
        counts: dict[str, int] | None = None,
        num_sites: int = 0,
        poll: float = 1.0,
    ) -> None:
        self.seed, self.counts, self.timeout = seed, dict(counts or {}), timeout
        self.num_sites, self.poll = num_sites, poll
        self.names: dict[int, str] = {}

    def learn(self, replies: Iterable[Message]) -> None:
        """Remember the names that (non-error) replies carry."""
        self.names.update(names_in(replies))

    def identify(self, grid: Grid) -> list[int]:
        """Ask every connected node not yet named for its name; the nodes newly named."""
        unknown = [node for node in grid.get_node_ids() if node not in self.names]
        if not unknown:
            return []
        queries = [Message(RecordDict(), node, QUERY) for node in unknown]
        self.learn(arriving(grid, queries, timeout=self.timeout))
        return [node for node in unknown if node in self.names]

    def name(self, node: int | None) -> str:
        """The site's name, ``node <id>`` before it has given one."""
        if node is None:
            return "(unknown)"
        return self.names.get(node, f"node {node}")

    def label(self, node: int | None) -> str:
        """``'site-1' (node 1001)`` for a log line (``node 1001`` when not yet named)."""
        if node is not None and node in self.names:
            return f"'{self.names[node]}' (node {node})"
        return self.name(node)

    def describe(self, nodes: Iterable[int]) -> str:
        """``site-0 (node 1000), site-1 (node 1001)`` in name order (``node 1002`` unnamed)."""
        return ", ".join(
            f"{self.names[n]} (node {n})" if n in self.names else f"node {n}"
            for n in self.ordered(nodes)
        )

    def ordered(self, nodes: Iterable[int]) -> list[int]:
        """``nodes`` by site name; nodes not yet named last, by id."""
        return sorted(nodes, key=lambda n: (0, self.names[n], n) if n in self.names else (1, "", n))

    def sample(self, grid: Grid, server_round: int, phase: str) -> list[int]:
        """The nodes asked to ``phase`` in ``server_round``: a choice seeded by
        (``federation.seed``, round, phase) over the connected sites in name order."""
        if self.counts.get(phase, 1) > 0:
            connected_within(grid, self.num_sites, timeout=self.timeout, poll=self.poll)
        self.identify(grid)
        connected = self.ordered(grid.get_node_ids())
        count = min(self.counts.get(phase, len(connected)), len(connected))
        if count == len(connected):
            return connected
        rng = np.random.default_rng([self.seed, server_round, PHASES[phase]])
        chosen = sorted(int(i) for i in rng.choice(len(connected), size=count, replace=False))
        return [connected[i] for i in chosen]
