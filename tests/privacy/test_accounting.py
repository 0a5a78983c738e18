"""Cumulative accounting across rounds (and resume), and per-site epsilon budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opacus.accountants.analysis import rdp as rdp_analysis

from fedgray.fl.common.private import ledger_from_record
from fedgray.fl.serverapp.checkpoint import load_checkpoint
from fedgray.fl.simulation.engine import open_run
from tests.helpers import budget_between_rounds, micro_config, run_local

DP = ["privacy.enabled=true", "privacy.noise_multiplier=1.0", "privacy.delta=0.0001"]


def _privacy_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["privacy"] for line in lines]


def _rdp_epsilon(history: list[list[float]], delta: float) -> float:
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = sum(
        rdp_analysis.compute_rdp(q=q, noise_multiplier=n, steps=int(s), orders=orders)
        for n, q, s in history
    )
    return float(rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])


@pytest.mark.slow  # three DP federations
def test_epsilon_composes_all_rounds_and_survives_resume(tmp_path: Path) -> None:
    full, _, grid = run_local(micro_config(tmp_path, *DP, "federation.num_rounds=3", name="a"))
    records = _privacy_records(tmp_path / "a")
    assert [r["epsilon"] for r in records][0] == {}
    for site in ("0", "1", "2"):
        trajectory = [r["epsilon"][site] for r in records[1:]]
        assert trajectory == sorted(trajectory) and len(set(trajectory)) == 3
    state = load_checkpoint(tmp_path / "a").privacy
    for site, entry in state.items():
        assert sum(s for _, _, s in entry["history"]) == 3 * 2  # 3 rounds x 2 local steps
        recomputed = _rdp_epsilon(entry["history"], 1e-4)
        assert records[-1]["epsilon"][site] == pytest.approx(recomputed, rel=1e-12)
    assert records[-1]["max_epsilon"] == max(records[-1]["epsilon"].values())
    site_state = next(iter(grid.contexts.values())).state  # the site's own ledger
    assert ledger_from_record(site_state["privacy-ledger"]).steps == 6

    run_local(micro_config(tmp_path, *DP, name="b"))  # 2 rounds, then a fresh grid resumes
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "b")
    run_local(config)
    assert _privacy_records(tmp_path / "b")[-1] == records[-1]


@pytest.mark.parametrize("on_budget", ["skip", "stop"])
def test_no_site_trains_past_its_budget(tmp_path: Path, on_budget: str) -> None:
    budget = budget_between_rounds(micro_config(tmp_path, *DP))
    config = micro_config(
        tmp_path,
        *DP,
        f"privacy.epsilon_budget={budget}",
        f"privacy.on_budget={on_budget}",
        "federation.num_rounds=3",
    )
    result, _, _ = run_local(config)
    trained = [r["sites_trained"] for r in result.records]
    assert trained == ([0, 3, 0, 0] if on_budget == "skip" else [0, 3, 0])
    last = result.records[-1]["privacy"]
    assert len(last["budget_refusals"]) == 3
    assert "privacy budget reached" in last["budget_refusals"][0]
    assert all(0 < eps <= budget for eps in last["epsilon"].values())


def test_target_epsilon_is_met_over_the_planned_rounds(tmp_path: Path) -> None:
    config = micro_config(
        tmp_path, "privacy.enabled=true", "privacy.target_epsilon=3.0", "privacy.delta=0.0001"
    )
    result, _, _ = run_local(config)
    final = result.records[-1]["privacy"]["epsilon"].values()
    assert all(2.9 < eps <= 3.0 for eps in final)
