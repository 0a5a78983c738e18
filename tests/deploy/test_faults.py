"""Faults on loopback: the SuperLink killed mid-run and restarted on its database; the run,
submitted again, resumes from its last checkpoint and ends where an uninterrupted one does."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from fedgray.deploy.demo import flwr_run, submission
from fedgray.deploy.launch import flower_env
from fedgray.deploy.processes import Processes, wait_for_port
from fedgray.deploy.roles import start_superlink
from fedgray.runs import load_adapters
from tests.deploy.conftest import Federation, tiny_config

pytestmark = pytest.mark.slow
PLAIN = ("federation.secure_aggregation.enabled=false",)  # a faster run: 1 message per round


def _rounds(results: Path) -> list[dict]:
    metrics = results / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return [json.loads(line) for line in lines if line]


def _wait_for_round(results: Path, server_round: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["round"] >= server_round for r in _rounds(results)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"round {server_round} not logged in {results} after {timeout:.0f} s")


def test_a_restarted_superlink_resumes_the_run_and_ends_as_an_uninterrupted_one(
    federation: Federation, processes: Processes
) -> None:
    config = tiny_config(*PLAIN)
    quiet = lambda _: None  # noqa: E731
    straight = flwr_run(processes, federation.link, config, echo=quiet, timeout=300, name="a")

    args, resumed = submission(federation.link, config, name="b")
    run = processes.start(
        args,
        log_file=federation.link.options.run_dir / "flwr-run-b-first.log",
        env=flower_env(federation.link.flwr_home),
    )
    _wait_for_round(resumed, 1, timeout=300)
    federation.processes.kill(federation.link.process, signal.SIGKILL)  # SuperLink + ServerApp
    processes.kill(run)
    assert [r["round"] for r in _rounds(resumed)] == [0, 1]

    federation.link = start_superlink(
        federation.processes,
        federation.link.options,
        federation.credentials,
        register=False,  # the database keeps the sites' registrations
        echo=quiet,
    )
    options = federation.link.options
    wait_for_port(options.host, options.port, timeout=30, process=federation.link.process)
    flwr_run(processes, federation.link, config, echo=quiet, timeout=300, name="b")

    assert [r["round"] for r in _rounds(resumed)] == [0, 1, 2]
    expected, _ = load_adapters(straight / "adapters.pt", backbone="fedgray-micro")
    got, _ = load_adapters(resumed / "adapters.pt", backbone="fedgray-micro")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    final = [r for r in _rounds(straight) if r["round"] == 2][0]["privacy"]["epsilon"]
    again = [r for r in _rounds(resumed) if r["round"] == 2][0]["privacy"]["epsilon"]
    assert again == pytest.approx(final)
