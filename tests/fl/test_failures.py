"""Site failures: a minority is left out of its round, a round with no usable reply ends the run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from PIL import Image

from fedgray.cli import main
from fedgray.fl.clientapp import client as fl_client
from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.serverapp.app import make_server_app
from fedgray.fl.serverapp.failures import FederationError, check_phase, describe, short_reason
from fedgray.fl.simulation.local_grid import LocalGrid
from tests.helpers import MICRO, micro_config, run_local

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
    assert check_phase("train", 1, reasons=[], usable=0) is None  # e.g. all refused on budget
    warning = check_phase("train", 2, reasons=["A: a", "A: a", "B: b"], usable=5)
    assert warning == "round 2: 3 failed to train, left out: 2 sites: A: a (and 1 other failure)"
    with pytest.raises(FederationError, match=r"^round 3: no site could evaluate; 1 site: B: b$"):
        check_phase("evaluate", 3, reasons=["B: b"], usable=0)
    assert describe(["X: y"] * 4) == "4 sites: X: y"


def _failing_sites(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> None:
    real = fl_client.Site.train

    def train(self: fl_client.Site, *args: object, **kwargs: object) -> object:
        if self.partition_id in failing:
            raise OSError(f"disk of site {self.partition_id} is gone")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fl_client.Site, "train", train)


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
        f"round {r}: 1 failed to train, left out: 1 site: OSError: disk of site 1 is gone"
        for r in (1, 2)
    ]


def test_a_round_where_every_site_fails_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_sites(monkeypatch, {0, 1, 2})
    with pytest.raises(FederationError) as raised:
        run_local(micro_config(tmp_path))
    message = str(raised.value)
    assert re.fullmatch(
        r"round 1: no site could train; "
        r"1 site: OSError: disk of site \d is gone \(and 2 other failures\)",
        message,
    )
    assert "\n" not in message
    assert not (tmp_path / "run" / "adapters.pt").exists()  # no result pretends to be one


def _folder_with_a_broken_image(root: Path) -> Path:
    for split in ("train", "test"):
        folder = root / split
        folder.mkdir(parents=True)
        rows = ["file,caption,label"]
        for i in range(30):
            Image.new("RGB", (16, 16), (8 * i, 0, 0)).save(folder / f"{i}.png")
            rows.append(f"{i}.png,a square of shade {i},{'dark' if i < 15 else 'light'}")
        (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    (root / "train" / "7.png").write_bytes(b"not a png")  # found only when sites load it
    return root


@pytest.mark.slow
def test_fedgray_run_that_fails_exits_1_with_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = _folder_with_a_broken_image(tmp_path / "site")
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    overrides = [a for item in MICRO for a in ("--set", item)]
    code = main(["run", str(config), *overrides, "--set", f"data.dataset=folder:{data}",
                 "--set", "data.train_size=30", "--set", "data.test_size=20",
                 "--set", f"output.root={tmp_path}", "--set", "output.name=run"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("fedgray: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "fedgray: error: round 0: no site could evaluate; 3 sites: ValueError: "
        f"{data}/train/captions.csv line 9: cannot read image {data}/train/7.png"
    )
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
