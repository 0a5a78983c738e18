"""Site failures: a minority is left out of its round, a round with no usable reply ends the run."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, RecordDict
from PIL import Image

from fedgray.cli import main
from fedgray.fl.clientapp import app as fl_app
from fedgray.fl.clientapp import client as fl_client
from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.serverapp.app import make_server_app
from fedgray.fl.serverapp.failures import (
    Failure,
    FederationError,
    check_phase,
    describe,
    short_reason,
)
from fedgray.fl.simulation import engine
from fedgray.fl.simulation.local_grid import FIRST_NODE_ID, LocalGrid
from tests.helpers import MICRO, micro_config, refused, run_local, run_on

RAY_REASON = """\
ray::ClientAppActor.run() (pid=6279, ip=192.0.2.2, actor_id=0697)
  File "/x/flwr/clientapp/client_app.py", line 161, in __call__
    return self._registered_funcs[full_name](message, context)
ValueError: cannot split 9 samples into 10 non-empty partitions

The above exception was the direct cause of the following exception:

flwr.clientapp.client_app.ClientAppException:
Exception ClientAppException occurred. Message: cannot split 9 samples into 10 non-empty partitions
"""


def test_the_innermost_exception_line_is_the_reason() -> None:
    assert short_reason(RAY_REASON) == (
        "ValueError: cannot split 9 samples into 10 non-empty partitions"
    )
    assert short_reason("KeyError: 'x'") == "KeyError: 'x'"
    assert short_reason("") == "unknown error"
    assert len(short_reason("E: " + "x" * 1000)) <= 300


def test_tolerated_and_fatal_phases() -> None:
    names = {1: "'a' (node 1)", 2: "'b' (node 2)", 3: "node 3"}
    label = lambda node: names[node]  # noqa: E731
    assert check_phase("train", 1, failed=[], usable=0, asked=2) is None  # e.g. all refused
    failed = [Failure(1, "A: a"), Failure(3, "B: b"), Failure(2, "A: a")]
    warning = check_phase("train", 2, failed=failed, usable=5, asked=8, label=label)
    assert warning == (
        "round 2: sites 'a' (node 1), 'b' (node 2) failed to train: A: a; "
        "site node 3 failed to train: B: b; 5 of 8 sites trained"
    )
    with pytest.raises(
        FederationError,
        match=r"^round 3: no site could evaluate; site 'b' \(node 2\) failed to evaluate: B: b$",
    ):
        check_phase("evaluate", 3, failed=[Failure(2, "B: b")], usable=0, asked=1, label=label)
    many = [Failure(n, "X: y") for n in range(8)]
    assert describe(many, "train", lambda n: f"node {n}") == (
        "sites node 0, node 1, node 2, node 3, node 4, 3 more failed to train: X: y"
    )


def _failing_sites(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> None:
    real = fl_client.Client.train

    def train(self: fl_client.Client, *args: object, **kwargs: object) -> object:
        if self.partition_id in failing:
            raise OSError(f"disk of site {self.partition_id} is gone")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fl_client.Client, "train", train)


def test_a_minority_of_failing_sites_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_sites(monkeypatch, {1})
    lines: list[str] = []
    result, _, _ = run_local(micro_config(tmp_path), echo=lines.append)
    assert [r["sites_trained"] for r in result.records] == [0, 2, 2]
    assert [r["site_failures"] for r in result.records] == [0, 1, 1]
    warnings = [line for line in lines if "failed to train" in line]
    assert warnings == [
        f"round {r}: site 'site-1' (node {FIRST_NODE_ID + 1}) failed to train: "
        "OSError: disk of site 1 is gone; 2 of 3 sites trained"
        for r in (1, 2)
    ]
    assert [r["failed_sites"] for r in result.records] == [[], ["site-1"], ["site-1"]]


def _unidentified(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sites that do not answer the server's query (as a site of an older fedgray would not):
    the server learns their names from their train and evaluate replies only."""

    def identity_reply(name: str, msg: object) -> object:
        raise NotImplementedError("no query handler")

    monkeypatch.setattr(fl_app, "identity_reply", identity_reply)


def test_a_site_failing_after_it_replied_is_named_in_the_log_and_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unidentified(monkeypatch)
    real = fl_client.Client.train

    def train(self: fl_client.Client, *args: object, server_round: int, **kwargs: object) -> object:
        if self.partition_id == 2 and server_round == 2:
            raise ConnectionError("Node Unavailable")
        return real(self, *args, server_round=server_round, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fl_client.Client, "train", train)
    config = micro_config(tmp_path, "federation.fraction_evaluate=0")  # no names in round 0
    grid = LocalGrid(make_client_app(config), 3)
    grid.contexts[FIRST_NODE_ID + 2].node_config["site-name"] = "hospital-b"
    lines: list[str] = []
    result = run_on(config, grid, lines.append)
    assert [line for line in lines if "failed" in line] == [
        f"round 2: site 'hospital-b' (node {FIRST_NODE_ID + 2}) failed to train: "
        "ConnectionError: Node Unavailable; 2 of 3 sites trained"
    ]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["failed_sites"] for r in logged] == [[], [], ["hospital-b"]]
    assert [r["site_failures"] for r in result.records] == [0, 0, 1]


def test_a_site_never_heard_from_is_named_by_its_node_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unidentified(monkeypatch)
    _failing_sites(monkeypatch, {0})
    lines: list[str] = []
    config = micro_config(tmp_path, "federation.fraction_evaluate=0", "federation.num_rounds=1")
    result = run_on(config, LocalGrid(make_client_app(config), 3), lines.append)
    assert lines[0] == "sites: " + ", ".join(f"node {FIRST_NODE_ID + i}" for i in range(3))
    assert [line for line in lines if "failed" in line] == [
        f"round 1: site node {FIRST_NODE_ID} failed to train: OSError: disk of site 0 is gone; "
        "2 of 3 sites trained"
    ]
    assert result.records[1]["failed_sites"] == [f"node {FIRST_NODE_ID}"]


def test_a_round_where_every_site_fails_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_sites(monkeypatch, {0, 1, 2})
    with pytest.raises(FederationError) as raised:
        run_local(micro_config(tmp_path))
    message = str(raised.value)
    assert message == "round 1: no site could train; " + "; ".join(
        f"site 'site-{i}' (node {FIRST_NODE_ID + i}) failed to train: OSError: disk of site {i} "
        "is gone"
        for i in range(3)
    )
    assert "\n" not in message
    assert not (tmp_path / "run" / "adapters.pt").exists()  # no result pretends to be one


def _shaded_folder(root: Path, *, test_only_class: str | None = None) -> Path:
    """30 squares per split, labelled dark or light; every third test square labelled
    ``test_only_class`` instead, when given."""
    for split in ("train", "validation", "test"):
        folder = root / split
        folder.mkdir(parents=True)
        rows = ["file,caption,label"]
        for i in range(30):
            Image.new("RGB", (16, 16), (8 * i, 0, 0)).save(folder / f"{i}.png")
            label = "dark" if i < 15 else "light"
            if split == "test" and test_only_class is not None and i % 3 == 0:
                label = test_only_class
            rows.append(f"{i}.png,a square of shade {i},{label}")
        (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_fedgray_run_that_fails_exits_1_with_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _shaded_folder(tmp_path / "site")
    checks = engine.preflight

    def break_after_the_checks(*args: Any, **kwargs: Any) -> str | None:
        note = checks(*args, **kwargs)
        (data / "train" / "7.png").write_bytes(b"not a png")  # as a failing disk might
        return note

    monkeypatch.setattr(engine, "preflight", break_after_the_checks)
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    overrides = [a for item in MICRO for a in ("--set", item)]
    code = main(["run", str(config), *overrides, "--set", f"data.dataset=folder:{data}",
                 "--set", "data.train_size=30", "--set", "data.test_size=20",
                 "--set", "data.validation_size=20",
                 "--set", f"output.root={tmp_path}", "--set", "output.name=run"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("fedgray: error:")]
    assert len(errors) == 1
    assert re.match(
        r"fedgray: error: round 0: no site could evaluate; "
        r"sites 'site-0' \(node \d+\), 'site-1' \(node \d+\), 'site-2' \(node \d+\) "
        r"failed to evaluate: ValueError: ",
        errors[0],
    )
    assert f"{data}/train/captions.csv line 9: cannot read image {data}/train/7.png" in errors[0]
    assert errors[0].endswith(f"(Flower's log: {tmp_path}/run/flower.log)")
    assert "Traceback" not in out + err  # the tracebacks went to the log
    assert "cannot identify image file" in (tmp_path / "run" / "flower.log").read_text()
    assert not (tmp_path / "run" / "adapters.pt").exists()


def test_fewer_sites_than_configured_fail_instead_of_hanging(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "federation.round_timeout=2")
    grid = LocalGrid(make_client_app(config), 2)  # 2 SuperNodes for 3 configured sites
    app = make_server_app(config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    started = time.monotonic()
    with pytest.raises(FederationError, match=r"^federation.num_sites: 3 sites configured, 2 "):
        app(grid, context)
    assert time.monotonic() - started < 30


def _run_on_folder(tmp_path: Path, data: Path, command: str = "run") -> list[str]:
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    sets = [*MICRO, f"data.dataset=folder:{data}", "data.train_size=30", "data.test_size=20"]
    sets.append("data.validation_size=20")
    sets += ["train.task=classification", "train.steps=2", f"output.root={tmp_path / 'runs'}"]
    return [command, str(config), *(a for item in sets for a in ("--set", item))]


def test_a_truncated_image_is_refused_before_the_federation_starts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = _shaded_folder(tmp_path / "site")
    image = data / "train" / "7.png"
    image.write_bytes(image.read_bytes()[:40])  # a copy cut short
    error = refused(_run_on_folder(tmp_path, data), capfd)
    assert error.startswith(
        f"fedgray: error: data.dataset: {data}/train/captions.csv line 9: cannot read image "
        f"{image}: "
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["run", "adapt"])
def test_a_class_without_training_examples_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], command: str
) -> None:
    data = _shaded_folder(tmp_path / "site", test_only_class="grey")
    error = refused(_run_on_folder(tmp_path, data, command), capfd)
    assert error == (
        f"fedgray: error: data.dataset: class 'grey' of folder:{data} has test examples but "
        "no training examples"
    )
    assert not (tmp_path / "runs").exists()


def test_a_folder_without_a_validation_split_is_refused_before_the_federation_starts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Server-side evaluation scores every round on the validation split (the test split
    only once, at the end): a folder without one is refused, not evaluated on test."""
    data = _shaded_folder(tmp_path / "site")
    shutil.rmtree(data / "validation")
    error = refused(_run_on_folder(tmp_path, data), capfd)
    assert error == f"fedgray: error: data.dataset: no captions.csv in {data / 'validation'}"
    assert not (tmp_path / "runs").exists()
