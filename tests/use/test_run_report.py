"""``report.html``: written by ``fedgray adapt`` and by every federated run (the ServerApp's
finish, which deployed runs share), self-contained, and showing the run's own figures."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from importlib.util import find_spec
from pathlib import Path

import pytest

from fedgray.cli import main
from fedgray.tracking import TENSORBOARD_DIR
from tests.helpers import micro_config, run_local


class Page(HTMLParser):
    """Tables by id (rows of cell texts), SVG points, and every attribute naming a resource."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.points: list[tuple[float, float]] = []
        self.resources: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.resources += [v or "" for k, v in attrs if k in ("src", "href")]
        self.scripts += tag in ("script", "link", "iframe")
        if tag == "table":
            self._table = values["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "circle":
            self.points.append((float(values["data-x"] or 0), float(values["data-y"] or 0)))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_self_contained(page: Page) -> None:
    assert page.scripts == 0
    assert all(r.startswith("data:image/png;base64,") for r in page.resources)


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
        [r["central"]["r1_mean"] for r in records], rel=1e-5
    )
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
    scalars = events.Scalars("central.r1_mean")
    assert [e.step for e in scalars] == [r["round"] for r in records]
    assert [e.value for e in scalars] == pytest.approx(
        [r["central"]["r1_mean"] for r in records], rel=1e-6
    )


def test_fedgray_adapt_writes_a_report(tmp_path: Path) -> None:
    micro = ["--set", "backbone.name=fedgray-micro", "--set", "backbone.pretrained=null",
             "--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "data.train_size=40",
             "--set", "data.test_size=20", "--set", f"output.root={tmp_path}",
             "--set", "output.name=alone", "--quiet"]  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  batch_size: 8\n")
    assert main(["adapt", str(config), *micro]) == 0
    page = parse(tmp_path / "alone" / "report.html")
    assert_self_contained(page)
    records = [json.loads(line) for line in (tmp_path / "alone" / "metrics.jsonl").open()]
    assert [x for x, _ in page.points] == [r["step"] for r in records]
    assert [y for _, y in page.points] == pytest.approx([r["r1_mean"] for r in records], rel=1e-5)
    adapted = json.loads((tmp_path / "alone" / "summary.json").read_text())["adapted"]
    shown = {row[0]: float(row[2]) for row in page.tables["summary"][1:]}
    assert shown == pytest.approx(adapted, rel=1e-3)
