"""The server's test split is read once per run, after the last round: every round's
record, the curve, the progress lines and ``federation.select: best`` read the validation
split; the reported figure, and only it, is the test split's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fedgray.fl.serverapp import server
from fedgray.runs import load_adapters
from fedgray.tasks import TaskData
from tests.helpers import micro_config, run_local

ON_VALIDATION = ["federation.select=best", "federation.select_on=validation"]


def count_split_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times the server loads each of its splits from now on."""
    reads: Counter[str] = Counter()
    load = server._split_data

    def counted(config: object, split: str) -> TaskData:
        reads[split] += 1
        return load(config, split)  # type: ignore[arg-type]

    monkeypatch.setattr(server, "_split_data", counted)
    return reads


def test_rounds_read_validation_and_the_test_split_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_split_reads(monkeypatch)
    lines: list[str] = []
    config = micro_config(tmp_path, *ON_VALIDATION, "federation.num_rounds=3")
    result, summary, _ = run_local(config, echo=lines.append)
    assert reads["test"] == 1  # four rounds scored, the test split loaded once
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert all({"validation", "federated"} <= set(r) and "central" not in r for r in records)
    assert not any("test" in key for r in records for key in r)
    # The one test figure: the chosen round's adapters, as anyone scores them from the
    # run folder's adapters.pt; the per-round figures are the validation split's.
    state, meta = load_adapters(run / "adapters.pt", backbone="fedgray-micro")
    assert meta["round"] == result.selected == summary["selected_round"]
    validation = [r["validation"]["r1_mean"] for r in records]
    assert result.selected == validation.index(max(validation))
    score = server.central_evaluator(config, "test")
    assert summary["final"] == score(result.arrays) == result.test["final"]
    assert summary["zero_shot"] == score(server.initial_adapters(config))
    assert summary["validation"]["final"] == records[result.selected]["validation"]
    assert summary["evaluated_on"] == "the server's test split, read once after the last round"
    assert summary["curve_on"] == "the server's validation split"
    said = [line for line in lines if "test" in line]
    assert said == [f"test split, read once (round {result.selected}): {_figures(summary)}"]
    assert all("(validation; sites" in line for line in lines if line.startswith("round "))
    page = (run / "report.html").read_text()
    assert "<th>validation r1_mean</th>" in page and "server r1_mean" not in page


def _figures(summary: dict) -> str:
    final, zero = summary["final"]["r1_mean"], summary["zero_shot"]["r1_mean"]
    return f"r1_mean {final:.1f} (zero-shot {zero:.1f})"


def test_without_central_evaluation_the_test_split_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_split_reads(monkeypatch)
    config = micro_config(tmp_path, "federation.central_eval=false", "federation.num_rounds=1")
    result, summary, _ = run_local(config)
    assert reads["test"] == 0 and result.test == {}
    assert summary["evaluated_on"] == summary["curve_on"] == "the sites' held-out data"
    assert summary["final"]["r1_mean"] == result.records[-1]["federated"]["r1_mean"]
    assert "validation" not in result.records[-1]


def test_without_site_evaluation_the_rounds_name_the_validation_split_alone(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    config = micro_config(tmp_path, "federation.fraction_evaluate=0", "federation.num_rounds=1")
    result, _, _ = run_local(config, echo=lines.append)
    assert all(record["federated"] == {} for record in result.records)
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == 2 and all("(validation)  loss" in line for line in rounds)
    assert not any("nan" in line for line in rounds)
