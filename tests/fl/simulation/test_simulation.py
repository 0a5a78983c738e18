"""`fedgray run` on Flower's local simulation (a SuperLink in simulation mode, `flwr run`,
Ray), and its command line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from fedgray.cli import main
from tests.helpers import MICRO, runtime_processes, runtime_processes_after_exit

LONG = "a-run-folder-name-long-enough-that-ray-is-reached-through-a-short-link"


@pytest.mark.slow
def test_fedgray_run_on_a_local_superlink_writes_the_run_and_stops_everything(
    capsys: pytest.CaptureFixture, own_temp: Path
) -> None:
    short = tempfile.mkdtemp(prefix="r", dir=own_temp)
    try:
        config = Path(short) / "micro.yaml"
        config.write_text("federation:\n  partitioner: iid\n")
        overrides = [a for item in MICRO for a in ("--set", item)]
        env = {k: os.environ.get(k) for k in ("FLWR_HOME", "RAY_TMPDIR")}
        before = runtime_processes()
        code = main(["run", str(config), *overrides, "--set", f"output.root={short}",
                     "--set", f"output.name={LONG}"])  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0
        assert "round 2/2" in out and "zero-shot" in out and "KB per site per round" in out
        assert "deprecated" not in (out + err).lower()
        run = Path(short) / LONG
        rounds = [json.loads(x)["round"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert rounds == [0, 1, 2]
        # results only: Flower's and Ray's runtime files lived in a temp dir, now removed
        assert sorted(p.name for p in run.iterdir()) == [
            "adapters.pt", "checkpoint.pt", "config.yaml", "curve.png", "flower.log",
            "metrics.jsonl", "progress.log", "report.html", "summary.json",
        ]  # fmt: skip
        # it ran on a SuperLink in simulation mode, never on the deprecated run_simulation
        flower_log = (run / "flower.log").read_text()
        assert "Starting Flower SuperLink" in flower_log
        assert "run_simulation` function is deprecated" not in flower_log
        assert "round 2/2" in (run / "progress.log").read_text()
        assert not list(own_temp.glob("fedgray-*"))
        assert {k: os.environ.get(k) for k in env} == env
        assert not runtime_processes_after_exit(before)  # Ray, the SuperLink: all stopped
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_run_command_help_and_argument_errors(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--resume RUN_DIR" in capsys.readouterr().out
    assert main(["run"]) == 2
    assert "a CONFIG file is needed" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_run_refuses_a_setting_federated_craft_cannot_take(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    config = tmp_path / "craft.yaml"
    config.write_text(
        "method:\n  name: craft\ntrain:\n  task: classification\nfederation:\n  strategy: fedprox\n"
    )
    assert main(["run", str(config), "--set", f"output.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "federation.strategy: not with method 'craft' in federated runs" in err
    assert err.count("\n") == 1 and not list(tmp_path.glob("federated-*"))


def test_a_superlink_that_cannot_start_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, own_temp: Path
) -> None:
    from fedgray.fl.simulation import engine

    broken = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(engine, "superlink_command", lambda options: broken)
    config = tmp_path / "micro.yaml"
    config.write_text("{}\n")
    overrides = [a for item in MICRO for a in ("--set", item)]
    code = main(["run", str(config), *overrides, "--set", f"output.root={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("fedgray: error: the local SuperLink did not start: ")
    assert "exited (3)" in err[-1]
    assert not list(own_temp.glob("fedgray-*"))
