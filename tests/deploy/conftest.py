"""Deployment fixtures: a loopback federation whose every process is stopped at teardown,
whether the test passed or failed, and a check that nothing it started survives."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedgray.config import Config
from fedgray.deploy.credentials import Credentials, create_credentials
from fedgray.deploy.demo import demo_config, start_federation
from fedgray.deploy.roles import SuperLink, SuperNode, start_supernode
from fedgray.deploy.trial_folders import OwnerFiles, seal_backbone, write_partition_folders
from fedgray.launch.processes import Processes, descendants
from fedgray.resolver import load_config

NUM_SITES = 3
RUN_LIMIT_S = 900
"""Upper bound for one run (about 2 minutes on 2 free cores; shared CI machines run slower)."""
TINY = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "data.train_size=60",
    "data.validation_size=20",
    "data.test_size=20",
    "train.batch_size=8",
    "train.threads=1",
    "federation.num_rounds=2",
    "federation.local_steps=1",
    "federation.fraction_evaluate=0.0",
    "privacy.enabled=true",
    "privacy.noise_multiplier=1.0",
    "federation.secure_aggregation.enabled=true",
]


def tiny_config(*overrides: str) -> Config:
    """3 sites, 2 rounds of one DP-SGD step each, SecAgg+, the random micro CLIP."""
    return demo_config(load_config(None, [*TINY, *overrides]), NUM_SITES)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Processes stopped at teardown; the test fails if any of them (or their children)
    is still alive afterwards."""
    started = Processes()
    yield started
    pids = [p for proc in started.started for p in descendants(proc.pid)]
    started.stop()
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"processes left running: {left}"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


@dataclass
class Federation:
    """A started loopback federation and what it was made from."""

    run_dir: Path
    config: Config
    credentials: Credentials
    owner: OwnerFiles
    data_dirs: list[Path]
    link: SuperLink
    supernodes: list[SuperNode]
    processes: Processes


@pytest.fixture(scope="session")
def session_processes() -> Iterator[Processes]:
    """Processes of the suite's federation, stopped when the session ends."""
    started = Processes()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def federation(
    tmp_path_factory: pytest.TempPathFactory, session_processes: Processes
) -> Federation:
    """SuperLink (TLS, node authentication) and 3 SuperNodes on 127.0.0.1, shared by the
    deployment tests (starting one costs about 15 s); each test submits its own runs."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    run_dir = tmp_path_factory.mktemp("deploy")
    config = tiny_config()
    owner = seal_backbone(config, run_dir / "owner")
    data_dirs = write_partition_folders(config, NUM_SITES, run_dir / "sites")
    credentials = create_credentials(run_dir / "credentials", NUM_SITES)
    link, nodes = start_federation(
        session_processes, run_dir, credentials, data_dirs, owner, echo=lambda _: None
    )
    return Federation(
        run_dir, config, credentials, owner, data_dirs, link, nodes, session_processes
    )


def restart_supernode(federation: Federation, node: SuperNode, timeout: float = 120) -> SuperNode:
    """``node`` started again with the same key; retried while the SuperLink still counts
    the killed instance online (it refuses a second activation until heartbeats lapse)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = node.log_file.read_text().count("SuperNode ID") if node.log_file.exists() else 0
        again = start_supernode(
            federation.processes, node.options, site_dir=node.site_dir, echo=lambda _: None
        )
        while again.process.poll() is None and time.monotonic() < deadline:
            if again.log_file.read_text().count("SuperNode ID") > seen:
                return again
            time.sleep(0.5)
        time.sleep(5)
    raise TimeoutError(f"SuperNode {node.options.node_config} did not rejoin in {timeout} s")
