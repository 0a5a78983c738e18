"""Single-site adaptation end to end on the built-in benchmark, and the CLI around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedgray.adapt import adapt
from fedgray.adapters import build_model
from fedgray.backbone import load_sealed
from fedgray.cli import main
from fedgray.resolver import load_config
from fedgray.runs import load_adapters
from tests.helpers import TEST_RECIPE


def recipe_overrides() -> list[str]:
    return [f"pretrain.{k}={v}" for k, v in vars(TEST_RECIPE).items()]


@pytest.mark.slow
def test_short_dga_adaptation_beats_zero_shot_on_sketches(
    pretrained_tiny: Path, tmp_path: Path
) -> None:
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "adapt_sketch.yaml",
        [
            *recipe_overrides(),
            "data.train_size=1000",
            "data.test_size=300",
            "train.steps=120",
            "train.eval_every=60",
            f"output.root={tmp_path}",
            "output.name=run",
        ],
    )
    result = adapt(config, progress=False, echo=lambda _: None)
    assert result.adapted["r1_mean"] > result.zero_shot["r1_mean"] + 5.0
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "adapters.pt", "curve.png", "summary.json"} <= {
        p.name for p in run.iterdir()
    }
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 60, 120]
    assert load_config(run / "config.yaml") == config

    state, meta = load_adapters(run / "adapters.pt", backbone="fedgray-tiny")
    assert meta["method"] == "dga"
    backbone = load_sealed("fedgray-tiny", pretrained_tiny, level="gray")
    model = build_model(backbone, "dga")
    model.load_state_dict(state)
    assert (run / "adapters.pt").stat().st_size < 1_000_000


def test_adapters_file_checks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="adapters file not found"):
        load_adapters(tmp_path / "none.pt", backbone="x")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a fedgray adapters file"):
        load_adapters(tmp_path / "bad.pt", backbone="x")
    torch.save(
        {"format": "fedgray-adapters/1", "meta": {"backbone": "a"}, "state": {}}, tmp_path / "a.pt"
    )
    with pytest.raises(ValueError, match="trained for 'a', not 'b'"):
        load_adapters(tmp_path / "a.pt", backbone="b")


@pytest.mark.parametrize("command", [[], ["adapt"], ["pretrain"], ["info"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: fedgray" in text
    if command == ["adapt"]:
        assert "--set KEY=VALUE" in text and "--output DIR" in text


def test_cli_reports_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stpes: 3\n")
    assert main(["adapt", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedgray: error: train.stpes: unknown key") and "\n" not in err


def test_cli_info_lists_methods(capsys: pytest.CaptureFixture) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "dga" in out and "world/sketch" in out and "fedgray-tiny" in out


def test_cli_output_into_a_closed_pipe_ends_quietly_as_shell_tools_do() -> None:
    """`fedgray info | head -1`: the reader leaves early; no traceback, exit 128 + SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    done = subprocess.run(
        [sys.executable, "-m", "fedgray.cli", "info"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE
    assert done.stderr == ""


def test_adapt_that_cannot_start_leaves_no_folder_and_never_overwrites_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  steps: 2\n")
    micro = [str(config), "--set", "backbone.name=fedgray-micro", "--set",
             "backbone.pretrained=null", "--set", f"output.root={tmp_path}",
             "--set", "output.name=mine"]  # fmt: skip
    assert main(["adapt", *micro, "--set", "data.dataset=folder:/nonexistent"]) == 2
    assert "no captions.csv in /nonexistent" in capsys.readouterr().err
    assert not (tmp_path / "mine").exists()
    short = ["--set", "data.dataset=digits", "--set", "data.train_size=40"]
    short += ["--set", "data.validation_size=500"]
    assert main(["adapt", *micro, *short]) == 2
    assert capsys.readouterr().err == (
        "fedgray: error: data.validation_size: digits has 100 validation samples, 500 requested\n"
    )
    assert not (tmp_path / "mine").exists()
    finished = tmp_path / "mine"
    finished.mkdir()
    (finished / "summary.json").write_text("{}")
    assert main(["adapt", *micro]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert [p.name for p in finished.iterdir()] == ["summary.json"]
