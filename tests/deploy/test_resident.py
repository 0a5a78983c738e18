"""A site's ClientApp is one process per SuperNode: it serves every message of a run (torch,
the backbone and the data load once), and it stops with the SuperNode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.demo import flwr_run, start_federation
from fedgray.deploy.site_data import seal_backbone, write_site_data
from fedgray.launch.processes import Processes
from tests.deploy.conftest import NUM_SITES, RUN_LIMIT_S, alive, tiny_config

SERVED = re.compile(r"fedgray site: ClientApp process (\d+) served message (\d+) of run (\d+)")

pytestmark = [pytest.mark.slow, pytest.mark.deploy]


def _served(log: Path) -> list[tuple[int, int, int]]:
    """``(pid, count, run)`` of each message the site's log says was served."""
    found = (SERVED.search(line) for line in log.read_text().splitlines())
    return [(int(m[1]), int(m[2]), int(m[3])) for m in found if m]


def test_one_clientapp_process_per_site_serves_the_whole_run_and_stops_with_it(
    tmp_path: Path, processes: Processes
) -> None:
    """Three sites, two SecAgg+ rounds (each site: its name query, then four protocol stages
    a round): at each site one process serves every message of the run, counting them one
    by one; once the SuperLink and SuperNodes are stopped, none of those processes lives."""
    config = tiny_config()
    owner = seal_backbone(config, tmp_path / "owner")
    data_dirs = write_site_data(config, NUM_SITES, tmp_path / "sites")
    credentials = create_credentials(tmp_path / "credentials", NUM_SITES)
    link, nodes = start_federation(
        processes, tmp_path, credentials, data_dirs, owner, echo=lambda _: None
    )
    flwr_run(processes, link.options.run_dir, config, echo=lambda _: None, timeout=RUN_LIMIT_S)
    servers = set()
    for node in nodes:
        served = _served(node.log_file)
        assert {run for _, _, run in served} == {served[0][2]}, "one run only"
        assert len({pid for pid, _, _ in served}) == 1, f"{node.log_file}: {served}"
        assert [count for _, count, _ in served] == list(range(1, len(served) + 1))
        assert len(served) >= 1 + 4 * config.federation.num_rounds
        servers.add(served[0][0])
    assert len(servers) == NUM_SITES and all(alive(pid) for pid in servers)
    processes.stop()
    assert not [pid for pid in servers if alive(pid)]
