"""``fedgray bench --secagg``: its arguments, how rounds become rows and ratios, the table,
and one small simulated row measured for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgray.bench.secagg import Plan, Rounds, Row, bench_secagg, table
from fedgray.cli import main


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--rounds", "1"], "--rounds"),
        (["--blocks", "0"], "--blocks"),
        (["--deployed", "2"], "--deployed"),
        (["--sites", "2,8"], "--sites"),
        (["--deployed-only", "--deployed", "0"], "--deployed-only"),
        (["--deployed-only", "--sites", "8"], "--deployed-only"),
    ],
)
def test_bad_arguments_fail_in_one_line_naming_them_before_anything_runs(
    tmp_path: Path,
    threads: None,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    field: str,
) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--secagg", "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fedgray bench: error: {field}:")
    assert not out.exists()


def test_the_first_round_of_a_run_is_left_out_and_the_rest_give_medians() -> None:
    records = [
        {"round": 0, "seconds": 0.0, "bytes_down": 0, "bytes_up": 0},
        {"round": 1, "seconds": 9.0, "bytes_down": 100, "bytes_up": 50},  # opens backbone, data
        {"round": 2, "seconds": 2.0, "bytes_down": 100, "bytes_up": 50},
        {"round": 3, "seconds": 4.0, "bytes_down": 100, "bytes_up": 70},
        {"round": 4, "seconds": 3.0, "bytes_down": 100, "bytes_up": 60},
    ]
    assert Rounds.of(records) == Rounds(seconds=3.0, bytes=160.0)
    with pytest.raises(ValueError, match="no round after the first"):
        Rounds.of(records[:2])


def test_ratios_pair_the_two_sides_within_each_block() -> None:
    """The ratio is the median of per-block ratios (2.0 and 1.5), not the ratio of the
    medians over blocks (2.5 / 1.5)."""
    pairs = [(Rounds(1.0, 100.0), Rounds(2.0, 300.0)), (Rounds(2.0, 100.0), Rounds(3.0, 500.0))]
    row = Row.of("simulated", "fedgray-micro", 8, pairs)
    assert (row.plain_s, row.secure_s) == (1.5, 2.5)
    assert row.time_ratio == 1.75
    assert row.bytes_ratio == 4.0


def test_the_table_states_the_goals_only_with_a_deployed_row() -> None:
    pairs = [(Rounds(2.0, 1000.0), Rounds(2.5, 3000.0))]
    sim = Row.of("simulated", "fedgray-tiny", 3, pairs)
    dep = Row.of("deployed", "fedgray-tiny", 3, pairs)
    alone = table([sim], None)
    assert len(alone.splitlines()) == 3 and "goal" not in alone
    assert "| simulated | fedgray-tiny | 3 | 2.00 s | 2.50 s | 1.25x | 1.0 | 3.0 | 3.00x |" in alone
    both = table([sim, dep], 1.1).splitlines()
    assert (
        both[-2]
        == "- deployed plain round / the same round simulated (3 sites): 1.10x (goal <= 1.3)"
    )
    assert both[-1] == "- deployed SecAgg+ round / deployed plain round: 1.25x (goal <= 1.5)"


def test_deployed_only_measures_the_deployed_row_and_its_twin_alone(
    tmp_path: Path, threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No simulated row is run; the deployed section gets the plan's deployed sites and
    writes its two rows and the goal lines."""
    import fedgray.bench.secagg as secagg

    pairs = [(Rounds(2.0, 1000.0), Rounds(3.0, 1500.0))]
    asked: list[Plan] = []

    def deployed(plan: Plan, root: Path, *, echo: object) -> tuple[Row, Row, float]:
        asked.append(plan)
        twin = Row.of("simulated", plan.model, plan.deployed, pairs)
        return Row.of("deployed", plan.model, plan.deployed, pairs), twin, 1.2

    def simulated(*_args: object, **_kwargs: object) -> list[Row]:
        raise AssertionError("a simulated row ran under --deployed-only")

    monkeypatch.setattr(secagg, "deployed_rows", deployed)
    monkeypatch.setattr(secagg, "simulated_rows", simulated)
    out = tmp_path / "out"
    assert main(["bench", "--secagg", "--deployed-only", "--deployed", "4", "--out", str(out)]) == 0
    assert [plan.deployed for plan in asked] == [4] and asked[0].simulated == ()
    record = json.loads((out / "secagg.json").read_text())
    assert [(r["engine"], r["sites"]) for r in record["rows"]] == [
        ("simulated", 4),
        ("deployed", 4),
    ]
    assert record["deployed_vs_simulated"] == 1.2


@pytest.mark.slow
def test_a_simulated_row_is_measured_and_secagg_sends_more(tmp_path: Path, threads: None) -> None:
    """Three micro sites, one block of two-round runs: SecAgg+'s keys, shares and masked
    vectors cost more bytes than the plain update, and both sides took time."""
    plan = Plan(simulated=(3,), deployed=0, rounds=2, blocks=1, site_samples=16, local_steps=1)
    text = bench_secagg(plan, tmp_path, echo=lambda _: None)
    record = json.loads((tmp_path / "secagg.json").read_text())
    (row,) = record["rows"]
    assert (row["engine"], row["sites"]) == ("simulated", 3)
    assert row["plain_s"] > 0 and row["secure_s"] > 0
    assert row["secure_bytes"] > row["plain_bytes"] > 0
    assert record["deployed_vs_simulated"] is None
    assert (tmp_path / "secagg.md").read_text() == text
