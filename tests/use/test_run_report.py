"""``report.html``: written by ``fedgray adapt`` and by every federated run (the ServerApp's
finish, which deployed runs share), self-contained, and showing the run's own figures."""

from __future__ import annotations

import html
import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from fedgray.cli import main
from fedgray.tracking import TENSORBOARD_DIR
from tests.helpers import micro_config, run_local
from tests.use.report_page import assert_self_contained, browser, parse, render


@pytest.mark.slow
@pytest.mark.skipif(find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_a_federated_run_writes_a_report_with_its_own_figures(tmp_path: Path) -> None:
    config = micro_config(
        tmp_path,
        "privacy.enabled=true",
        "privacy.noise_multiplier=1.0",
        "privacy.epsilon_budget=50",
        "output.track=[tensorboard]",
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_local(config)
    run = tmp_path / "run"
    page = parse(run / "report.html")
    assert_self_contained(page)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert [x for x, _ in page.points] == [r["round"] for r in records]
    assert [y for _, y in page.points] == pytest.approx(
        [r["validation"]["r1_mean"] for r in records], rel=1e-5
    )
    text = html.unescape((run / "report.html").read_text())
    assert "Scored on the server's test split, read once after the last round." in text
    assert "Every point on the server's validation split." in text
    shown = {row[0]: row for row in page.tables["summary"][1:]}
    assert float(shown["r1_mean"][2]) == pytest.approx(summary["final"]["r1_mean"], rel=1e-3)
    rounds = page.tables["rounds"][1:]
    assert [int(row[0]) for row in rounds] == [0, 1, 2]
    assert [int(row[1]) for row in rounds] == [r["sites_trained"] for r in records]
    epsilons = {row[0]: float(row[1]) for row in page.tables["privacy"][1:]}
    assert epsilons == pytest.approx(
        {s: e for s, e in records[-1]["privacy"]["epsilon"].items()}, rel=1e-3
    )
    assert all(row[2] == "50" for row in page.tables["privacy"][1:])
    assert "noise_multiplier: 1.0" in (run / "report.html").read_text()
    events = EventAccumulator(str(run / TENSORBOARD_DIR))  # the sink holds the same rounds
    events.Reload()
    scalars = events.Scalars("validation.r1_mean")
    assert [e.step for e in scalars] == [r["round"] for r in records]
    assert [e.value for e in scalars] == pytest.approx(
        [r["validation"]["r1_mean"] for r in records], rel=1e-6
    )


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a 4-step ``fedgray adapt`` run of the micro CLIP."""
    root = tmp_path_factory.mktemp("adapt")
    micro = ["--set", "backbone.name=fedgray-micro", "--set", "backbone.pretrained=null",
             "--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "data.train_size=40",
             "--set", "data.test_size=20", "--set", f"output.root={root}",
             "--set", "output.name=alone", "--quiet"]  # fmt: skip
    config = root / "c.yaml"
    config.write_text("train:\n  batch_size: 8\n")
    assert main(["adapt", str(config), *micro]) == 0
    return root / "alone"


def test_fedgray_adapt_writes_a_report(adapted: Path) -> None:
    page = parse(adapted / "report.html")
    assert_self_contained(page)
    records = [json.loads(line) for line in (adapted / "metrics.jsonl").open()]
    assert [x for x, _ in page.points] == [r["step"] for r in records]
    assert [y for _, y in page.points] == pytest.approx([r["r1_mean"] for r in records], rel=1e-5)
    summary = json.loads((adapted / "summary.json").read_text())["adapted"]
    shown = {row[0]: float(row[2]) for row in page.tables["summary"][1:]}
    assert shown == pytest.approx(summary, rel=1e-3)


@pytest.mark.skipif(browser() is None, reason="no headless Chromium (apt chromium-headless-shell)")
def test_the_report_renders_in_a_headless_browser_offline(adapted: Path, tmp_path: Path) -> None:
    executable = browser()
    assert executable is not None
    page = parse(adapted / "report.html")
    shown = render(adapted / "report.html", tmp_path, executable=executable)
    assert shown.errors == [] and shown.console == [] and shown.fetched == []
    width, height, circles = shown.svg or [0, 0, 0]
    assert width > 100 and height > 50 and circles == len(page.points)
    assert shown.image is not None and shown.image[0] and shown.image[1] > 100  # decoded PNG
    assert shown.tables == {name: len(rows) for name, rows in page.tables.items()}

    remote = tmp_path / "remote"  # the probe sees a page that reaches out
    remote.mkdir()
    text = (adapted / "report.html").read_text(encoding="utf-8")
    (remote / "report.html").write_text(
        text.replace("<h2>", '<img src="https://example.org/pixel.png"><h2>', 1)
    )
    reaching = render(remote / "report.html", remote, executable=executable)
    assert len(reaching.errors) == 1 and "example.org" in reaching.errors[0]
