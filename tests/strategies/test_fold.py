"""Averaging strategies fold each update in as it arrives: same mean, any order, one sum held."""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message

from fedgray.fl.common.packing import unpack
from fedgray.fl.serverapp.loop import run_round
from fedgray.fl.simulation.local_grid import LocalGrid
from strategies import build_strategy
from strategies.fold import MeanFold
from tests.helpers import assert_close
from tests.strategies.test_screen import toy_app, zeros


def updates(count: int, seed: int) -> list[tuple[ArrayRecord, float]]:
    """``count`` float32 updates of mixed magnitudes with example counts as weights."""
    rng = np.random.default_rng(seed)
    return [
        (
            ArrayRecord(
                {
                    "w": Array(
                        (rng.standard_normal((40, 30)) * 10.0 ** rng.integers(-6, 3)).astype(
                            np.float32
                        )
                    ),
                    "b": Array(rng.standard_normal(()).astype(np.float32)),
                }
            ),
            float(rng.integers(1, 500)),
        )
        for _ in range(count)
    ]


def folded(pairs: list[tuple[ArrayRecord, float]]) -> dict[str, np.ndarray]:
    fold = MeanFold()
    for arrays, weight in pairs:
        fold.add(arrays, weight)
    mean = fold.mean({"w": np.dtype(np.float32), "b": np.dtype(np.float32)})
    return {k: a.numpy() for k, a in mean.items()}


def test_the_folded_mean_is_the_weighted_mean_bit_for_bit_in_any_order() -> None:
    pairs = updates(200, seed=0)
    exact = {
        k: (
            sum(np.float64(w) * a[k].numpy().astype(np.float64) for a, w in pairs)
            / sum(w for _, w in pairs)
        )
        for k in ("w", "b")
    }
    first = folded(pairs)
    assert first["b"].shape == () and first["w"].dtype == np.float32
    for k in exact:  # the mean rounded once, to float32 (the reference sums in another order)
        assert_close(first[k], np.asarray(exact[k]).astype(np.float32), terms=1)
    order = np.random.default_rng(1).permutation(len(pairs))
    shuffled = folded([pairs[i] for i in order])
    assert all(np.array_equal(first[k], shuffled[k]) for k in first)
    # the plain float32 sum Flower's FedAvg does depends on the order: what folding avoids
    total = sum(w for _, w in pairs)

    def plain(sequence: list[tuple[ArrayRecord, float]]) -> np.ndarray:
        acc = np.zeros((40, 30), np.float32)
        for arrays, weight in sequence:
            acc += arrays["w"].numpy() * (weight / total)
        return acc

    assert not np.array_equal(plain(pairs), plain([pairs[i] for i in order]))


class Watching(LocalGrid):
    """A grid that counts, at every train pull, the updates of earlier replies still alive."""

    def __init__(self, nodes: int) -> None:
        super().__init__(toy_app(), nodes, record=False)
        self.refs: list[weakref.ref[ArrayRecord]] = []
        self.most_alive = 0

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        alive = sum(ref() is not None for ref in self.refs)
        replies = list(super().pull_messages(message_ids))
        trains = [r for r in replies if r.metadata.message_type == "train" and not r.has_error()]
        for reply in trains:  # the arrays the server holds: unpacked (see arriving)
            unpack(reply.content)
        if trains:  # a pull of the train phase (evaluation replies come through here too)
            self.most_alive = max(self.most_alive, alive)
        self.refs += [weakref.ref(r.content["arrays"]) for r in trains]
        return replies


@pytest.mark.parametrize(("name", "held"), [("fedavg", 0), ("fedadam", 0), ("fedmedian", 7)])
def test_an_averaging_server_lets_each_update_go_before_the_next_arrives(
    name: str, held: int
) -> None:
    strategy = build_strategy(name, num_sites=8)
    grid = Watching(8)
    outcome = run_round(strategy, grid, zeros(), 1, timeout=10)
    assert grid.most_alive == held  # the median needs all 8 at once
    assert outcome.trained == 4 and len(strategy.rejections) == 4  # partitions 1-4 are broken
    if name == "fedavg":  # partitions 0, 5, 6, 7 add 1, 6, 7, 8 with equal weights
        assert all(np.all(a.numpy() == 5.5) for a in outcome.arrays.values())
