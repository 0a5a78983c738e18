"""A deployed site's privacy floor against a hostile run config: whatever the submitter
asks for, the site trains only within its own node config's minimums, and every run on its
data draws from one lifetime budget kept in its state folder.

In-process: a :class:`LocalGrid` whose nodes carry ``data-dir`` and floor keys as deployed
SuperNodes do, driven by fedgray's own ServerApp with the hostile config; the end-to-end
case on a real SuperLink is in ``tests/deploy/test_attacks.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.clientapp.floor import LEDGER_FILE, Floor, spent_epsilon
from fedgray.fl.common.private import SITE_REFUSED
from fedgray.fl.simulation.local_grid import FIRST_NODE_ID, LocalGrid
from fedgray.privacy import Ledger
from tests.helpers import micro_config, run_on

DP = ["privacy.enabled=true", "privacy.noise_multiplier=1.0"]
DELTA = 1e-5


def _run(
    tmp_path: Path, overrides: list[str], floor: dict[str, Any], *, run_id: int = 1
) -> LocalGrid:
    """One federation of three deployed sites, each with ``floor`` in its node config and
    its own state folder; the grid, whose replies the test reads."""
    config = micro_config(tmp_path, *overrides, name=f"run-{run_id}")
    folders = sorted((tmp_path / "sites").glob("site-*/data"))
    if not folders:
        folders = write_partition_folders(config, 3, tmp_path / "sites")
    grid = LocalGrid(make_client_app(config), 3)
    for i, folder in enumerate(folders):
        context = grid.contexts[FIRST_NODE_ID + i]
        context.run_id = run_id
        context.node_config.update(
            {"data-dir": str(folder), "state-dir": str(folder.parent / "state"), **floor}
        )
    try:
        run_on(config, grid)
    except RuntimeError:
        pass  # a run whose every site refuses stops: the replies are what the test reads
    return grid


def _train_replies(grid: LocalGrid) -> list[Message]:
    return [
        r
        for r, m in zip(grid.received, grid.sent, strict=True)
        if m.metadata.message_type == "train"
    ]


def _refusals(grid: LocalGrid) -> list[str]:
    return [
        str(r.error.reason)
        for r in _train_replies(grid)
        if r.has_error() and r.error.code == SITE_REFUSED
    ]


@pytest.mark.parametrize(
    ("overrides", "floor", "reason"),
    [
        (["privacy.enabled=false"], {"require-dp": True}, "privacy.enabled is false"),
        (
            ["privacy.enabled=true", "privacy.noise_multiplier=0.1"],
            {"min-noise": 0.8},
            "noise multiplier 0.1 is below min-noise 0.8",
        ),
        ([*DP, "train.batch_size=30"], {"max-sample-rate": 0.2}, "above max-sample-rate 0.2"),
        ([*DP, "method.name=output"], {"allowed-methods": "dga"}, "method.name 'output'"),
        (DP, {"require-secure-mode": True}, "privacy.secure_mode is false"),
        ([*DP, "federation.num_rounds=3"], {"max-rounds": 2}, "round 3 is above"),
    ],
    ids=["no-dp", "little-noise", "big-batches", "method", "seeded-noise", "rounds"],
)
def test_a_site_refuses_a_run_config_below_its_floor(
    tmp_path: Path, overrides: list[str], floor: dict[str, Any], reason: str
) -> None:
    """Every train message gets the site's refusal naming the point, and no update leaves:
    not one train reply carries arrays."""
    grid = _run(tmp_path, overrides, floor)
    replies = _train_replies(grid)
    assert replies
    assert all(r.has_error() for r in replies)
    refusals = _refusals(grid)
    assert len(refusals) == len(replies)
    assert all(reason in r for r in refusals), refusals[0]


@pytest.mark.slow
def test_two_runs_on_the_same_data_spend_from_one_lifetime_budget(tmp_path: Path) -> None:
    """Run 1 within the floor spends epsilon e1 per site; with a lifetime limit halfway
    between e1 and the epsilon of run 1's steps taken twice, run 2 (another run id, the same
    state folders) is refused once its next round would cross it, and the site's ledger
    never goes above the limit."""
    first = _run(tmp_path, DP, {"max-epsilon-total": 1e6}, run_id=1)
    assert not _refusals(first)
    states = sorted((tmp_path / "sites").glob("site-*/state"))
    ledgers = [json.loads((s / LEDGER_FILE).read_text())["1"] for s in states]
    once = [Ledger("rdp", tuple(map(tuple, h))).epsilon(DELTA) for h in ledgers]
    twice = [Ledger("rdp", tuple(map(tuple, h + h))).epsilon(DELTA) for h in ledgers]
    assert min(once) > 0
    limit = (max(once) + min(twice)) / 2
    assert max(once) < limit < min(twice)
    second = _run(tmp_path, DP, {"max-epsilon-total": limit}, run_id=2)
    refusals = _refusals(second)
    assert refusals and all("max-epsilon-total" in r for r in refusals)
    for state in states:
        after = spent_epsilon(state, delta=DELTA)
        assert after["total"] <= limit < min(twice)


@pytest.mark.slow
def test_a_run_is_refused_above_the_sites_per_run_limit(tmp_path: Path) -> None:
    """A per-run limit between one round's and two rounds' epsilon: round 1 is released,
    round 2 is refused, and the run's ledger holds one round."""
    one_round = _run(tmp_path / "probe", [*DP, "federation.num_rounds=1"], {"max-epsilon-run": 1e6})
    state = sorted((tmp_path / "probe" / "sites").glob("site-*/state"))[0]
    e1 = spent_epsilon(state, delta=DELTA)["1"]
    assert not _refusals(one_round)
    grid = _run(tmp_path, DP, {"max-epsilon-run": 1.2 * e1})
    refusals = _refusals(grid)
    assert len(refusals) == 3 and all("max-epsilon-run" in r for r in refusals)
    for state in sorted((tmp_path / "sites").glob("site-*/state")):
        assert spent_epsilon(state, delta=DELTA)["1"] <= 1.2 * e1


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("require-dp", "yes", "node-config require-dp: 'yes' is not true or false"),
        ("max-epsilon-run", "lots", "node-config max-epsilon-run: 'lots' is not a number"),
        ("max-epsilon-total", -1.0, "node-config max-epsilon-total: must be > 0, got -1.0"),
        ("max-rounds", 2.5, "node-config max-rounds: 2.5 is not an integer"),
    ],
)
def test_a_malformed_floor_is_one_line_naming_the_key(key: str, value: object, line: str) -> None:
    with pytest.raises(ValueError) as error:
        Floor.from_node_config({key: value})
    assert str(error.value) == line


def test_the_floors_epsilon_is_the_ledgers_and_opacus_to_the_bit_each_setting_computed_once(
    tmp_path: Path,
) -> None:
    """Six releases over two runs at two settings: every run's epsilon and the total are
    exactly the run's :class:`Ledger`'s and exactly what Opacus' own RDP accountant gives
    for that history, and the site computed each setting's RDP curve once, not once per
    entry per release (the total grows by an entry a round, for as long as the site
    serves)."""
    from opacus.accountants import RDPAccountant

    from fedgray.privacy import ledger as module

    def opacus(entries: tuple[tuple[float, float, int], ...]) -> float:
        accountant = RDPAccountant()
        accountant.history = list(entries)
        return float(accountant.get_epsilon(delta=1e-5))

    module._rdp_curve.cache_clear()
    floor = Floor(max_epsilon_run=1e6, max_epsilon_total=1e6)
    for round_ in range(6):
        spent = (1.1, 0.05, 4) if round_ % 2 else (0.9, 0.1, 2)
        floor.release(tmp_path, round_ // 3, spent)
    assert module._rdp_curve.cache_info().misses == 2
    history = json.loads((tmp_path / LEDGER_FILE).read_text())
    spent = spent_epsilon(tmp_path, delta=1e-5)
    runs = {run: tuple((n, q, s) for n, q, s in entries) for run, entries in history.items()}
    runs["total"] = tuple(entry for entries in runs.values() for entry in entries)
    assert len(runs["total"]) == 6 and set(spent) == set(runs)
    for run, entries in runs.items():
        assert spent[run] == Ledger("rdp", entries).epsilon(1e-5) == opacus(entries)
    assert module._rdp_curve.cache_info().misses == 2
