"""The operator's and the sites' mistakes, each answered in one line before anything runs
on: a second SuperLink on a live run folder, an ``--insecure`` SuperNode against a TLS
SuperLink (and a TLS one against an ``--insecure`` SuperLink), and a SuperNode restarted
while the SuperLink still counts its killed predecessor online."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.roles import ACTIVATED, start_superlink, start_supernode
from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.launch.commands import SuperLinkOptions, SuperNodeOptions
from fedgray.launch.processes import Processes, free_port
from tests.deploy.conftest import Federation, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
CLI_LIMIT_S = 180


def _fedgray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedgray.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_LIMIT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_a_second_superlink_on_a_live_run_folder_is_refused_before_starting(
    federation: Federation,
) -> None:
    run_dir = federation.link.options.run_dir
    port = free_port()
    done = _fedgray(
        "deploy",
        "superlink",
        "--credentials",
        str(federation.credentials.root),
        "--run-dir",
        str(run_dir),
        "--port",
        str(port),
    )
    assert done.returncode == 2, done.stderr
    reaper = federation.link.process.pid
    assert done.stderr.strip().splitlines() == [
        f"fedgray: error: --run-dir {run_dir}: a SuperLink (pid {reaper}) runs on it "
        "already; stop it first, or give another --run-dir"
    ]
    assert done.stdout == ""  # nothing started, nothing registered
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_an_insecure_supernode_against_a_tls_superlink_is_refused_in_one_line(
    federation: Federation, tmp_path: Path
) -> None:
    site = federation.credentials.sites[0]
    done = _fedgray(
        "deploy",
        "supernode",
        "--insecure",
        "--superlink",
        federation.link.options.address,
        "--site",
        "0",
        "--credentials",
        str(site.private_key.parent),
        "--data",
        str(federation.data_dirs[0]),
        "--run-dir",
        str(tmp_path),
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        f"fedgray: error: --insecure: the SuperLink at {federation.link.options.address} "
        "speaks TLS; drop --insecure and give --credentials (the federation's CA "
        "certificate and this site's key)"
    )
    assert all(line.startswith("WARNING: --insecure") for line in lines[:-1])
    assert not (tmp_path / "supernode.log").exists()


def test_a_tls_supernode_against_an_insecure_superlink_is_refused_in_one_line(
    federation: Federation, processes: Processes, tmp_path: Path
) -> None:
    plain = SuperLinkOptions(
        "127.0.0.1", free_port(), tmp_path / "link", None, None, None, insecure=True
    )
    start_superlink(processes, plain, None, echo=lambda _: None)
    site = federation.credentials.sites[0]
    options = SuperNodeOptions(
        plain.address,
        site.ca_cert,
        site.private_key,
        {"data-dir": str(federation.data_dirs[0])},
        free_port(),
    )
    with pytest.raises(ValueError) as refused:
        start_supernode(processes, options, site_dir=tmp_path / "site", echo=lambda _: None)
    assert str(refused.value) == (
        f"--superlink {plain.address}: it does not speak TLS (a SuperLink started with "
        "--insecure?); start both with TLS, or both with --insecure"
    )
    assert not (tmp_path / "site" / "supernode.log").exists()


def test_a_supernode_restarted_inside_the_rejoin_delay_says_so(
    processes: Processes, tmp_path: Path
) -> None:
    """A site's SuperNode killed (no sign-off) and started again at once: the SuperLink
    still counts it online and refuses its key; the command says why and when to retry,
    not that the key is unregistered."""
    credentials = create_credentials(tmp_path / "creds", 1)
    options = SuperLinkOptions(
        "127.0.0.1",
        free_port(),
        tmp_path / "link",
        credentials.superlink_ca_cert,
        credentials.superlink_cert,
        credentials.superlink_key,
    )
    start_superlink(processes, options, credentials, echo=lambda _: None)
    data = write_partition_folders(tiny_config(), 1, tmp_path / "sites")[0]
    site = credentials.sites[0]
    site_dir = tmp_path / "site"
    node = start_supernode(
        processes,
        SuperNodeOptions(
            options.address, site.ca_cert, site.private_key, {"data-dir": str(data)}, free_port()
        ),
        site_dir=site_dir,
        echo=lambda _: None,
    )
    deadline = time.monotonic() + CLI_LIMIT_S
    while ACTIVATED not in node.log_file.read_text() and time.monotonic() < deadline:
        assert node.process.poll() is None, node.log_file.read_text()[-2000:]
        time.sleep(0.5)
    processes.kill(node.process, signal.SIGKILL)  # no sign-off: heartbeats simply stop
    done = _fedgray(
        "deploy",
        "supernode",
        "--superlink",
        options.address,
        "--site",
        "0",
        "--credentials",
        str(site.private_key.parent),
        "--data",
        str(data),
        "--run-dir",
        str(site_dir),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "fedgray: error: the SuperLink refused this site's key: it still counts this site's "
        "previous SuperNode online (stopped without signing off, e.g. killed) until 60 s "
        f"after its last heartbeat; start it again then (see {site_dir / 'supernode.log'})"
    ]
