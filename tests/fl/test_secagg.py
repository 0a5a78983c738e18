"""SecAgg+ rounds: the secure mean equals the plain weighted mean of the very same updates
within quantization error, a dropout within the threshold is survived, only adapters
travel, and DP-SGD ledgers still reach the server."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedgray.adapters import build_model
from fedgray.cli import main
from fedgray.config import Config
from fedgray.fl.common.cache import shared_backbone
from fedgray.fl.common.fit_messages import ADAPTER_KEYS
from fedgray.fl.serverapp.checkpoint import load_checkpoint
from tests.helpers import (
    MICRO,
    SECURE,
    Updates,
    budget_between_rounds,
    first_round_change,
    micro_config,
    run_local,
    runtime_processes,
    runtime_processes_after_exit,
    spy_on_updates,
)


def weighted_mean(updates: Updates) -> list[np.ndarray]:
    total = sum(w for w, _ in updates.values())
    return [
        sum(w * arrays[i].astype(np.float64) for w, arrays in updates.values()) / total
        for i in range(len(next(iter(updates.values()))[1]))
    ]


def quantization_bound(config: Config, updates: Updates) -> float:
    """Worst-case error of SecAgg+'s mean: each site's weighted values are stochastically
    rounded to steps of ``2c / Q``, and each weight ``w / max_weight`` to steps of ``1 / Q``."""
    secure = config.federation.secure_aggregation
    q, step = secure.quantization_range, 2 * secure.clipping_range / secure.quantization_range
    ratios = [w / secure.max_weight for w, _ in updates.values()]
    largest = max(float(np.abs(a).max()) for _, arrays in updates.values() for a in arrays)
    return len(ratios) * step / sum(ratios) + largest / (min(ratios) * q)


@pytest.mark.parametrize("drop", [None, 3])
def test_secure_mean_is_the_weighted_mean_of_the_same_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop: int | None
) -> None:
    config = micro_config(tmp_path, *SECURE, "federation.num_rounds=1")
    updates = spy_on_updates(monkeypatch, drop=drop)
    result, _, _ = run_local(config)
    survivors = [p for p in range(4) if p != drop]
    assert sorted(updates) == survivors
    assert result.records[-1]["sites_trained"] == len(survivors)
    secure = first_round_change(tmp_path / "run", config)
    plain = weighted_mean(updates)
    bound = quantization_bound(config, updates)
    errors = [float(np.abs(s - p).max()) for s, p in zip(secure, plain, strict=True)]
    assert 0 < max(errors) <= bound
    assert max(float(np.abs(p).max()) for p in plain) > 100 * bound  # a real update


def test_only_masked_adapter_vectors_travel(tmp_path: Path) -> None:
    config = micro_config(tmp_path, *SECURE, "federation.num_rounds=1")
    _, _, grid = run_local(config)
    adapters = build_model(shared_backbone(config), "dga").state_dict()
    size = sum(t.numel() for t in adapters.values())
    fits = [m for m in grid.sent if "fitins.parameters" in m.content]
    assert len(fits) == 4
    for fit in fits:
        assert json.loads(str(fit.content["fitins.config"][ADAPTER_KEYS])) == list(adapters)
        arrays = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(fit.content["fitins.parameters"], True)
        )
        assert [a.shape for a in arrays] == [tuple(t.shape) for t in adapters.values()]
    evaluations = [m for m in grid.sent if "arrays" in m.content]
    assert all(list(m.content["arrays"]) == list(adapters) for m in evaluations)
    assert len(fits) + len(evaluations) == sum(bool(m.content.array_records) for m in grid.sent)
    masked = []
    for reply in grid.received:  # replies carry no arrays in the clear
        assert all(not record for record in reply.content.array_records.values())
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS, {})
        if Key.MASKED_PARAMETERS in configs:
            masked.append(configs[Key.MASKED_PARAMETERS])
    assert len(masked) == 4
    for vectors in masked:  # the weight, then one masked integer per adapter value
        assert sum(bytes_to_ndarray(b).size for b in vectors) == size + 1


def test_dp_sgd_ledgers_reach_the_server_under_secagg(tmp_path: Path) -> None:
    dp = ["privacy.enabled=true", "privacy.noise_multiplier=1.0", "privacy.delta=0.0001"]
    run_local(micro_config(tmp_path, *SECURE, *dp, name="secure"))
    run_local(micro_config(tmp_path, "federation.num_sites=4", *dp, name="plain"))
    records = {}
    for name in ("secure", "plain"):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [json.loads(line)["privacy"] for line in lines]
    assert records["secure"] == records["plain"]  # the same ledgers, the same epsilons
    assert set(records["secure"][-1]["epsilon"]) == {"0", "1", "2", "3"}
    assert (
        load_checkpoint(tmp_path / "secure").privacy == load_checkpoint(tmp_path / "plain").privacy
    )


def test_sites_past_their_budget_drop_out_of_secagg_and_say_why(tmp_path: Path) -> None:
    dp = ["privacy.enabled=true", "privacy.noise_multiplier=1.0", "privacy.delta=0.0001"]
    budget = budget_between_rounds(micro_config(tmp_path, *SECURE, *dp))
    config = micro_config(tmp_path, *SECURE, *dp, f"privacy.epsilon_budget={budget}")
    result, _, _ = run_local(config)
    assert [r["sites_trained"] for r in result.records] == [0, 4, 0]  # round 2: all refuse
    last = result.records[-1]["privacy"]
    assert len(last["budget_refusals"]) == 4
    assert all("privacy budget reached" in reason for reason in last["budget_refusals"])
    assert all(0 < eps <= budget for eps in last["epsilon"].values())


@pytest.mark.slow
def test_fedgray_run_with_secagg_dp_sgd_and_central_dp_on_ray(
    capsys: pytest.CaptureFixture,
) -> None:
    short = tempfile.mkdtemp(prefix="fgs", dir="/tmp")  # Ray's AF_UNIX paths need a short dir
    try:
        config = Path(short) / "micro.yaml"
        config.write_text("federation:\n  partitioner: iid\n")
        dp = ["privacy.enabled=true", "privacy.noise_multiplier=1", "privacy.central.enabled=true"]
        options = [*MICRO, *SECURE, *dp, f"output.root={short}", "output.name=r"]
        before = runtime_processes()
        code = main(["run", str(config), *[a for item in options for a in ("--set", item)]])
        out = capsys.readouterr().out
        assert code == 0
        assert "round 2/2" in out and "eps max" in out and "eps central" in out
        lines = (Path(short) / "r" / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        assert last["sites_trained"] == 4 and last["central_dp"]["releases"] == 2
        assert set(last["privacy"]["epsilon"]) == {"0", "1", "2", "3"}
        assert not runtime_processes_after_exit(before)
    finally:
        shutil.rmtree(short, ignore_errors=True)
