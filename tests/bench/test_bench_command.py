"""``fedgray bench --quick``: what it writes, not how fast anything ran (timings depend on
the machine; the format and the sanity of every figure do not)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedgray.cli import main

SECTIONS = (
    "training step",
    "bytes per site per round",
    "privacy and isolation",
    "output-side",
    "federation",
    "gray step throughput",
)


@pytest.mark.slow
def test_quick_bench_writes_finite_positive_ratios(
    tmp_path: Path, threads: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    figures = record["figures"]
    assert record["conditions"]["command"] == "fedgray bench --quick"
    assert record["conditions"]["threads"] == 1
    for section in SECTIONS:
        assert any(f["section"].startswith(section) for f in figures), section
    for f in figures:
        assert math.isfinite(f["value"]) and f["value"] > 0, f
        assert f["unit"] in ("x", "%", "/s", "TFLOP/s")
        assert f["met"] is None if f["goal"] is None else f["met"] == (f["value"] <= f["goal"])
    names = {f["name"] for f in figures}
    assert {"DGA / full fine-tuning, time", "DGA / full fine-tuning, peak memory"} <= names
    assert {"DP-SGD / non-private step", "isolated runtime / in-process step"} <= names
    assert "cached / uncached features, per epoch" in names
    assert "federated round / the same local steps in a loop" in names
    assert {"DGA step, samples per second", "DGA step / matmul ceiling"} <= names
    table = (tmp_path / "bench.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(figures) + len({f["section"] for f in figures})  # + header rows
    assert table in capsys.readouterr().out


def test_scaling_runs_the_site_counts_asked_each_against_the_first(
    tmp_path: Path, threads: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale"
    assert main(["bench", "--scaling", "fedgray-micro", "--sites", "1,3", "--out", str(out)]) == 0
    rows = json.loads((out / "scaling.json").read_text())
    assert [row["sites"] for row in rows] == [1, 3]
    assert rows[0]["memory_vs_first"] == rows[0]["site_step_vs_first"] == 1.0
    assert all(math.isfinite(row[k]) and row[k] > 0 for row in rows for k in row)
    assert "| 3 |" in capsys.readouterr().out


def test_scaling_site_counts_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--scaling", "--sites", "8,0", "--out", str(tmp_path / "s")])
    assert stopped.value.code == 2
    assert "site counts must be >= 1: '8,0'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
