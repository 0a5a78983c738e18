"""Fault injection: a run killed in any phase, out of disk, or interrupted loses nothing.

kill -9 in round 2 (a site training, the strategy aggregating, half of the checkpoint
written) leaves round 1's checkpoint, and ``--resume`` then ends bit-identical to an
uninterrupted run; a full disk at the checkpoint write keeps the previous checkpoint;
Ctrl-C stops ``fedgray run`` cleanly (Ray gone, temp dir removed) and the run resumes.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from fedgray.cli import main
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp import checkpoint as checkpoint_module
from fedgray.fl.serverapp.checkpoint import CHECKPOINT, load_checkpoint
from fedgray.fl.simulation.engine import open_run
from fedgray.fl.simulation.flower_home import HOME_PREFIX, OWNER_FILE, sweep_stale_homes
from tests.helpers import (
    MICRO,
    micro_config,
    run_local,
    runtime_processes,
    runtime_processes_after_exit,
)

FEDADAM = ["federation.strategy=fedadam", "federation.strategy_options={eta: 0.01}"]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final adapters of an uninterrupted 3-round run."""
    root = tmp_path_factory.mktemp("reference")
    result, _, _ = run_local(micro_config(root, *FEDADAM, "federation.num_rounds=3"))
    return from_record(result.arrays)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three killed runs, each resumed, against an uninterrupted one
@pytest.mark.parametrize("phase", ["train", "aggregate", "checkpoint"])
def test_kill_9_in_each_phase_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, phase: str, reference: dict[str, torch.Tensor]
) -> None:
    args = [*FEDADAM, "federation.num_rounds=3"]
    done = subprocess.run(
        [sys.executable, "-m", "tests.fl.simulation.fault_runner", phase, str(tmp_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    run_dir = tmp_path / phase
    assert load_checkpoint(run_dir).round == 1  # round 2 never replaced it
    config, _ = open_run(None, [], resume=run_dir)
    resumed, _, _ = run_local(config)
    assert [r["round"] for r in resumed.records] == [0, 1, 2, 3]
    assert _same(from_record(resumed.arrays), reference)


def test_a_full_disk_at_the_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict[str, torch.Tensor]
) -> None:
    real_save = torch.save

    def save(payload: object, handle: object, *args: object, **kwargs: object) -> None:
        if isinstance(payload, dict) and payload.get("round") == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(payload, handle, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    with pytest.raises(OSError, match="No space left"):
        run_local(micro_config(tmp_path, *FEDADAM, "federation.num_rounds=3"))
    monkeypatch.undo()
    run_dir = tmp_path / "run"
    assert load_checkpoint(run_dir).round == 1
    assert not (run_dir / "checkpoint.tmp").exists()
    config, _ = open_run(None, [], resume=run_dir)
    resumed, _, _ = run_local(config)
    assert _same(from_record(resumed.arrays), reference)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_the_run_resumes(
    tmp_path: Path, own_temp: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C, or SIGTERM as a scheduler sends it: Ray stopped, nothing left, resumable."""
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    overrides = [a for item in MICRO for a in ("--set", item)]
    ray_before = runtime_processes()
    command = [sys.executable, "-m", "fedgray.cli", "run", str(config), *overrides,
               "--set", "federation.num_rounds=50", "--set", f"output.root={tmp_path}",
               "--set", "output.name=run"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        for line in process.stdout:  # wait for a finished round
            if line.startswith("round 1/50") or time.monotonic() > deadline:
                break
        process.send_signal(sig)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err[-2000:]
    assert "interrupted; continue with: fedgray run --resume" in out
    assert not runtime_processes_after_exit(ray_before)  # Ray is gone
    assert not list(own_temp.glob("fedgray-*"))  # its dir removed
    run_dir = tmp_path / "run"
    done = load_checkpoint(run_dir).round
    assert done >= 1 and (run_dir / CHECKPOINT).is_file()
    resumed_config, _ = open_run(None, [f"federation.num_rounds={done + 1}"], resume=run_dir)
    resumed, _, _ = run_local(resumed_config)
    assert [r["round"] for r in resumed.records][-1] == done + 1
    assert main(["run", "--resume", str(run_dir), "--set", "method.name=output"]) == 2


@pytest.mark.slow
def test_kill_9_of_fedgray_run_stops_all_it_started_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """SIGKILL leaves fedgray run no chance to clean up: the SuperLink, its simulation and
    Ray must still go (nothing writes into the run folder after), and --resume finishes it."""
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    settings = [*MICRO, *FEDADAM, "federation.num_rounds=50", f"output.root={tmp_path}",
                "output.name=run"]  # fmt: skip
    before = runtime_processes()
    command = [sys.executable, "-m", "fedgray.cli", "run", str(config)]
    command += [a for item in settings for a in ("--set", item)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("round 1/50"):
                break
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not runtime_processes_after_exit(before)
    run_dir = tmp_path / "run"
    written = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    time.sleep(3)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == written
    done = load_checkpoint(run_dir).round
    assert 1 <= done < 50
    rounds = f"federation.num_rounds={done + 1}"
    assert main(["run", "--resume", str(run_dir), "--set", rounds]) == 0
    uninterrupted, _, _ = run_local(micro_config(tmp_path, *FEDADAM, rounds, name="whole"))
    assert _same(from_record(load_checkpoint(run_dir).arrays), from_record(uninterrupted.arrays))


def test_a_killed_runs_flower_home_and_processes_are_swept_at_the_next_start(
    own_temp: Path,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process: the run that owned the dir was killed
    stale = Path(tempfile.mkdtemp(prefix=HOME_PREFIX, dir=own_temp))
    (stale / OWNER_FILE).write_text(str(dead.pid))
    session = stale / "ray" / "session_1"
    session.mkdir(parents=True)
    agent = subprocess.Popen(  # stands for a Ray agent started with its session dir
        [sys.executable, "-c", "import time; time.sleep(120)", str(session)]
    )
    cmdline = Path(f"/proc/{agent.pid}/cmdline")
    deadline = time.monotonic() + 60
    while str(session).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)  # until the stand-in has exec'd: its command line names the dir
    mine = Path(tempfile.mkdtemp(prefix=HOME_PREFIX, dir=own_temp))
    (mine / OWNER_FILE).write_text(str(os.getpid()))  # a live run's dir is left alone
    try:
        assert stale in sweep_stale_homes()
        assert agent.wait(timeout=10) == -signal.SIGKILL
        assert not stale.exists() and mine.is_dir()
    finally:
        agent.kill()
        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
