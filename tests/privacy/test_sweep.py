"""The privacy-utility sweep on the micro setting: CSV rows, achieved epsilon, plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fedgray.cli import main
from tests.helpers import MICRO

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


@pytest.mark.slow
def test_sweep_writes_rows_within_target_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--rounds", "2", "--quiet"]
    assert main([*args, *(f"--set={o}" for o in MICRO)]) == 0
    (folder,) = tmp_path.glob("sweep-*")
    with (folder / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["target_epsilon"]) for r in rows] == [math.inf, 8, 4, 2, 1]
    private = rows[1:]
    for row in private:
        assert 0 < float(row["achieved_max_epsilon"]) <= float(row["target_epsilon"])
        assert int(row["steps"]) == 2 * 2  # 2 rounds x 2 local steps, every site trained
        assert row["accountant"] == "rdp" and float(row["delta"]) == 1e-5
    sigmas = [float(r["noise_multiplier"]) for r in private]
    assert sigmas == sorted(sigmas) and len(set(sigmas)) == 4  # less noise for a larger epsilon
    assert rows[0]["achieved_max_epsilon"] == "inf" and rows[0]["noise_multiplier"] == ""
    assert len({r["zero_shot_r1_mean"] for r in rows}) == 1
    for row in rows:
        records = (folder / row["run"] / "metrics.jsonl").read_text().splitlines()
        assert json.loads(records[-1])["round"] == 2
    assert (folder / "privacy_utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "sweep.json").read_text())["delta"] == 1e-5
    out = capsys.readouterr().out
    assert "zero-shot r1_mean" in out and f"sweep folder: {folder}" in out
    assert "[5/5] target epsilon 1, seed 0" in out and "round 1/2" not in out  # --quiet
