"""Bad updates are rejected with a logged reason while the round goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedgray.fl.common.packing import packed_mod
from fedgray.fl.serverapp.loop import run_round
from fedgray.fl.simulation.local_grid import LocalGrid
from strategies import build_strategy
from tests.helpers import assert_close

SHAPES = {"image_in.weight": (3, 3), "text_out.bias": (4,)}
FAULTS = {1: "nan", 2: "shape", 3: "missing", 4: "extra"}


def toy_app() -> ClientApp:
    """Clients add (partition + 1) to every adapter; partitions 1-4 send a broken update.
    Their arrays travel packed, as fedgray's own ClientApp's do."""
    app = ClientApp(mods=[packed_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        arrays = {k: a.numpy() + (pid + 1) for k, a in msg.content["arrays"].items()}
        fault = FAULTS.get(pid)
        if fault == "nan":
            arrays["text_out.bias"][1] = np.nan
        elif fault == "shape":
            arrays["image_in.weight"] = np.zeros((2, 3), np.float32)
        elif fault == "missing":
            del arrays["text_out.bias"]
        elif fault == "extra":
            arrays["backbone.weight"] = np.zeros(2, np.float32)
        record = ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in arrays.items()})
        metrics = MetricRecord({"num-examples": 10, "site": pid})
        return Message(RecordDict({"arrays": record, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


def zeros() -> ArrayRecord:
    return ArrayRecord({k: Array(np.zeros(s, np.float32)) for k, s in SHAPES.items()})


@pytest.mark.parametrize("name", ["fedavg", "fedmedian", "fedtrimmedavg"])
def test_bad_updates_are_dropped_and_the_round_goes_on(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    strategy = build_strategy(name, num_sites=6, options={"beta": 0.0} if "trimmed" in name else {})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        outcome = run_round(strategy, LocalGrid(toy_app(), 6), zeros(), 1, timeout=10)
    reasons = [r.reason for r in strategy.rejections]
    assert len(reasons) == 4
    assert "text_out.bias: non-finite values" in reasons
    assert "image_in.weight: shape (2, 3) float32, expected (3, 3) float32" in reasons
    assert "missing keys ['text_out.bias']" in reasons
    assert "unexpected keys ['backbone.weight']" in reasons
    assert sum("rejected update from node" in r.getMessage() for r in caplog.records) == 4
    # the good sites (partitions 0 and 5) add 1 and 6: every aggregate gives 3.5
    assert (outcome.trained, outcome.rejected) == (2, 4)
    for array in outcome.arrays.values():
        assert_close(array.numpy(), np.full_like(array.numpy(), 3.5), terms=outcome.trained)


def test_all_rejected_keeps_the_global_adapters() -> None:
    strategy = build_strategy("fedavg", num_sites=2)
    grid = LocalGrid(toy_app(), 5)
    grid.contexts = {
        n: c for n, c in grid.contexts.items() if c.node_config["partition-id"] in (1, 2)
    }
    outcome = run_round(strategy, grid, zeros(), 1, timeout=10)
    assert outcome.trained == 0 and outcome.train_metrics == {}
    assert all(np.all(a.numpy() == 0) for a in outcome.arrays.values())


def test_unknown_strategy_or_option_names_the_field() -> None:
    with pytest.raises(ValueError, match="federation.strategy: unknown strategy 'fedfoo'"):
        build_strategy("fedfoo", num_sites=2)
    with pytest.raises(ValueError, match="federation.strategy_options: fedadam"):
        build_strategy("fedadam", num_sites=2, options={"etaa": 0.1})


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_a_scalar_adapter_keeps_its_shape_round_after_round(name: str) -> None:
    """CLIP's logit scale is a 0-d tensor under full fine-tuning: the aggregate kept it 0-d
    once; turned into shape (1,), every update of the next round was rejected."""
    strategy = build_strategy(name, num_sites=1)
    arrays = ArrayRecord(
        {"logit_scale": Array(np.zeros((), np.float32)), **{k: a for k, a in zeros().items()}}
    )
    for rnd in (1, 2, 3):
        outcome = run_round(strategy, LocalGrid(toy_app(), 1), arrays, rnd, timeout=10)
        assert outcome.trained == 1 and strategy.rejections == []
        arrays = outcome.arrays
        assert {k: a.shape for k, a in arrays.items()} == {"logit_scale": (), **SHAPES}
