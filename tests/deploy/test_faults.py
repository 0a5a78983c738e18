"""Faults on loopback: the SuperLink killed mid-run and restarted on its database (the run,
submitted again, resumes from its last checkpoint and ends where an uninterrupted one does);
a SuperNode killed mid-round (the round goes on without it; it rejoins with a right ledger)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from fedgray.deploy.demo import flwr_run, submission
from fedgray.deploy.roles import start_superlink
from fedgray.launch.commands import flower_env
from fedgray.launch.processes import Processes
from fedgray.runs import load_adapters
from tests.deploy.conftest import (
    RUN_LIMIT_S,
    Federation,
    restart_supernode,
    tiny_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
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
    straight = flwr_run(
        processes,
        federation.link.options.run_dir,
        config,
        echo=quiet,
        timeout=RUN_LIMIT_S,
        name="a",
    )

    args, resumed = submission(federation.link.options.run_dir, config, name="b")
    run = processes.start(
        args,
        log_file=federation.link.options.run_dir / "flwr-run-b-first.log",
        env=flower_env(federation.link.flwr_home),
    )
    _wait_for_round(resumed, 1, timeout=RUN_LIMIT_S)
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
    flwr_run(
        processes,
        federation.link.options.run_dir,
        config,
        echo=quiet,
        timeout=RUN_LIMIT_S,
        name="b",
    )

    assert [r["round"] for r in _rounds(resumed)] == [0, 1, 2]
    expected, _ = load_adapters(straight / "adapters.pt", backbone="fedgray-micro")
    got, _ = load_adapters(resumed / "adapters.pt", backbone="fedgray-micro")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    final = [r for r in _rounds(straight) if r["round"] == 2][0]["privacy"]["epsilon"]
    again = [r for r in _rounds(resumed) if r["round"] == 2][0]["privacy"]["epsilon"]
    assert again == pytest.approx(final)


def test_a_supernode_killed_mid_round_is_left_out_and_its_ledger_is_right_when_it_rejoins(
    federation: Federation, processes: Processes
) -> None:
    config = tiny_config(*PLAIN, "federation.round_timeout=600")
    victim = federation.supernodes[2]
    args, results = submission(federation.link.options.run_dir, config, name="killed")
    run = processes.start(
        args,
        log_file=federation.link.options.run_dir / "flwr-run-killed.log",
        env=flower_env(federation.link.flwr_home),
    )
    log_file = federation.link.options.run_dir / "flwr-run-killed.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        # round 1 has sampled all three sites (after every site said its name): the victim
        # dies before its reply, which takes seconds (its first training message of a run
        # opens the sealed backbone and the data)
        text = log_file.read_text() if log_file.is_file() else ""
        if "sites: site-0 (node " in text and "configure_train: Sampled 3 nodes" in text:
            break
        time.sleep(0.05)
    assert time.monotonic() < deadline, "round 1 never started"
    federation.processes.kill(victim.process, signal.SIGKILL)
    _wait_for_round(results, 1, timeout=RUN_LIMIT_S)
    federation.supernodes[2] = restart_supernode(federation, victim)
    assert run.wait(timeout=RUN_LIMIT_S) == 0

    rounds = {r["round"]: r for r in _rounds(results)}
    assert (rounds[1]["sites_trained"], rounds[1]["site_failures"]) == (2, 1)
    assert (rounds[2]["sites_trained"], rounds[2]["site_failures"]) == (3, 0)
    assert (rounds[1]["failed_sites"], rounds[2]["failed_sites"]) == (["site-2"], [])
    log = log_file.read_text()
    assert re.search(
        r"round 1: site 'site-2' \(node \d+\) failed to train: .*; 2 of 3 sites trained", log
    )
    first, second = rounds[1]["privacy"]["epsilon"], rounds[2]["privacy"]["epsilon"]
    assert set(first) == {"0", "1"}  # the killed site released nothing in round 1
    assert second["2"] == pytest.approx(first["0"])  # one round's spend: the one it trained
    assert second["0"] > first["0"]
