"""Central (site-level) DP: clipping on the sites, the wrappers' noise, the central epsilon,
and the combination with SecAgg+."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from opacus.accountants.analysis import rdp as rdp_analysis

from fedgray.config import Config
from fedgray.fl.common.central import CentralLedger, with_central_dp, with_legacy_central_dp
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.loop import plain_training
from fedgray.fl.simulation.engine import open_run
from fedgray.fl.simulation.local_grid import LocalGrid
from strategies import build_strategy
from tests.helpers import SECURE, first_round_change, micro_config, run_local, spy_on_updates

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def central(z: float, clip: float, *extra: str) -> list[str]:
    return [
        "privacy.central.enabled=true",
        f"privacy.central.noise_multiplier={z}",
        f"privacy.central.clipping_norm={clip}",
        *extra,
    ]


def gaussian_epsilon(noise_multipliers: list[float], delta: float) -> float:
    """Epsilon of composed full-batch Gaussian mechanisms, from the closed-form RDP
    ``alpha / (2 z^2)`` of each release."""
    orders = np.array(ORDERS)
    rdp = sum(orders / (2 * z**2) for z in noise_multipliers)
    return float(rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)[0])


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_each_site_update_is_clipped_on_the_site(tmp_path: Path) -> None:
    clip = 1e-3
    _, _, grid = run_local(micro_config(tmp_path, *central(1.0, clip), "federation.num_rounds=1"))
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    replies = [m for m in grid.received if "arrays" in m.content and m.content.metric_records]
    replies = [m for m in replies if "train-loss" in m.content["metrics"]]
    assert len(trains) == len(replies) == 3
    sent = from_record(trains[0].content["arrays"])
    norms = []
    for reply in replies:
        new = from_record(reply.content["arrays"])
        norms.append(math.sqrt(sum(float((new[k] - sent[k]).double().pow(2).sum()) for k in sent)))
        assert reply.content["metrics"]["num-examples"] == 1  # uniform weights
    assert max(norms) <= clip * (1 + 1e-4)
    assert min(norms) > 0.5 * clip  # the raw updates were larger: clipping acted


def _zero_update_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"num-examples": 1, "site": context.node_config["partition-id"]})
        return Message(
            RecordDict({"arrays": msg.content["arrays"], "metrics": metrics}), reply_to=msg
        )

    return app


def test_the_wrappers_noise_has_std_z_times_c_over_m(tmp_path: Path) -> None:
    config = micro_config(tmp_path, *central(1.5, 0.2), "federation.num_sites=4")
    expected = 1.5 * 0.2 / 4
    zeros = np.zeros(200_000, np.float32)
    strategy = with_central_dp(build_strategy("fedavg", num_sites=4), config)
    grid = LocalGrid(_zero_update_app(), 4)
    train = plain_training(strategy, grid, timeout=10)
    result = train(1, ArrayRecord({"w": Array(zeros)}), ConfigRecord(), grid.get_node_ids())
    assert result.trained == 4
    legacy = with_legacy_central_dp(LegacyFedAvg(), config)
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([zeros]), 1, {})
    proxies = [GridClientProxy(node, None, 0) for node in range(4)]  # type: ignore[arg-type]
    parameters, _ = legacy.aggregate_fit(1, [(p, fitres) for p in proxies], [])
    for noise in (result.arrays["w"].numpy(), parameters_to_ndarrays(parameters)[0]):
        assert noise.std() == pytest.approx(expected, rel=0.01)
        assert abs(noise.mean()) < 5 * expected / math.sqrt(noise.size)


def test_central_epsilon_equals_an_independent_accountant(tmp_path: Path) -> None:
    z, delta = 2.0, 1e-3
    options = central(z, 0.5, f"privacy.central.delta={delta}")
    run_local(micro_config(tmp_path, *options, "federation.num_rounds=3", name="a"))
    logged = [r["central_dp"] for r in records(tmp_path / "a")]
    assert [r["releases"] for r in logged] == [0, 1, 2, 3]
    for rnd, record in enumerate(logged[1:], start=1):
        assert record["epsilon"] == pytest.approx(gaussian_epsilon([z] * rnd, delta), rel=1e-9)
        assert record["noise_std"] == pytest.approx(z * 0.5 / 3)
    run_local(micro_config(tmp_path, *options, name="b"))  # 2 rounds, then resumed to 3
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "b")
    run_local(config)
    assert records(tmp_path / "b")[-1]["central_dp"] == logged[-1]


def test_a_smaller_aggregate_is_accounted_with_less_noise(tmp_path: Path) -> None:
    config: Config = micro_config(tmp_path, *central(1.2, 1.0, "privacy.central.delta=0.01"))
    ledger = CentralLedger(config.privacy.central, sampled=3)
    ledger.update(3)
    assert ledger.update(0)["releases"] == 1  # a discarded round costs nothing
    record = ledger.update(2)  # a site dropped: the noise was calibrated for 3
    assert record["epsilon"] == pytest.approx(gaussian_epsilon([1.2, 1.2 * 2 / 3], 0.01))


def test_central_dp_composes_with_secure_aggregation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    z, clip = 1.0, 0.01
    config = micro_config(tmp_path, *SECURE, *central(z, clip), "federation.num_rounds=1")
    updates = spy_on_updates(monkeypatch)
    result, _, _ = run_local(config)
    assert sorted(updates) == [0, 1, 2, 3]
    assert all(weight == 1 for weight, _ in updates.values())
    for _, arrays in updates.values():
        assert math.sqrt(sum(float(np.square(a.astype(np.float64)).sum()) for a in arrays)) <= (
            clip * (1 + 1e-4)
        )
    mean = [sum(arrays[i].astype(np.float64) for _, arrays in updates.values()) / 4 for i in
            range(len(updates[0][1]))]  # fmt: skip
    change = first_round_change(tmp_path / "run", config)
    residual = np.concatenate([(c - m).ravel() for c, m in zip(change, mean, strict=True)])
    assert residual.std() == pytest.approx(z * clip / 4, rel=0.05)
    assert result.records[-1]["central_dp"]["epsilon"] == pytest.approx(
        gaussian_epsilon([z], config.privacy.central.delta), rel=1e-9
    )
