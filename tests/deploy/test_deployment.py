"""The deployment engine on loopback: TLS, SuperNode authentication, a whole DP-SGD +
SecAgg+ run served by one long-lived ClientApp process per site, an operator without the
backbone's key, Ctrl+C stopping every process, and the refusals (unregistered key, wrong CA,
missing data folder)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedgray.backbone.keys import ArtifactError
from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.demo import flwr_run, site_node_config
from fedgray.deploy.roles import start_supernode
from fedgray.launch.commands import SuperNodeOptions, flwr_json
from fedgray.launch.processes import Processes, descendants, free_port
from fedgray.materials import open_backbone
from tests.deploy.conftest import RUN_LIMIT_S, Federation, alive, tiny_config
from tests.use.report_page import assert_self_contained, parse

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
REFUSED_WITHIN_S = 120
SERVED = re.compile(r"fedgray site: ClientApp process (\d+) served message (\d+) of run (\d+)")
STARTED = re.compile(r"Successfully started run (\d+)")


def _stranger(federation: Federation, tmp_path: Path, *, registered_key: bool) -> SuperNodeOptions:
    """A fourth SuperNode: another federation's CA and key, or ours with a wrong CA."""
    other = create_credentials(tmp_path / "other", 1).sites[0]
    ours = federation.credentials.sites[0]
    return SuperNodeOptions(
        superlink=federation.link.options.address,
        root_cert=other.ca_cert if registered_key else ours.ca_cert,
        private_key=ours.private_key if registered_key else other.private_key,
        node_config=site_node_config(9, federation.data_dirs[0], federation.owner),
        port=free_port(),
        max_wait_time=10.0,
    )


def _served(log: Path, run_id: int) -> list[tuple[int, int]]:
    """``(pid, count)`` of each message of run ``run_id`` the site's log says was served."""
    found = (SERVED.search(line) for line in log.read_text().splitlines())
    return [(int(m[1]), int(m[2])) for m in found if m and int(m[3]) == run_id]


def _online_nodes(federation: Federation) -> int:
    nodes = flwr_json(["supernode", "list"], federation.link.flwr_home)["nodes"]
    return sum(1 for node in nodes if node["status"] == "online")


def test_a_supernode_with_an_unregistered_key_is_refused(
    federation: Federation, processes: Processes, tmp_path: Path
) -> None:
    options = _stranger(federation, tmp_path, registered_key=False)
    node = start_supernode(processes, options, site_dir=tmp_path, echo=lambda _: None)
    assert node.process.wait(timeout=REFUSED_WITHIN_S) != 0
    log = (tmp_path / "supernode.log").read_text()
    assert "Failed to activate SuperNode" in log


def test_a_supernode_with_the_wrong_ca_cannot_connect(
    federation: Federation, processes: Processes, tmp_path: Path
) -> None:
    options = _stranger(federation, tmp_path, registered_key=True)
    node = start_supernode(processes, options, site_dir=tmp_path, echo=lambda _: None)
    assert node.process.wait(timeout=REFUSED_WITHIN_S) != 0
    log = (tmp_path / "supernode.log").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log
    assert "SuperNode ID" not in log


def test_a_missing_site_data_folder_fails_in_one_line_naming_it(
    federation: Federation, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-data"
    site = federation.credentials.sites[0]
    done = subprocess.run(
        [sys.executable, "-m", "fedgray.cli", "deploy", "supernode"]
        + ["--superlink", federation.link.options.address, "--site", "0"]
        + ["--credentials", str(site.private_key.parent), "--data", str(missing)]
        + ["--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"fedgray: error: node-config data-dir: {missing}: no such directory"
    ]
    assert not (tmp_path / "supernode.log").exists()  # nothing was started


def test_three_sites_run_two_rounds_with_dp_sgd_and_secagg_over_tls(
    federation: Federation, processes: Processes
) -> None:
    results = flwr_run(
        processes,
        federation.link.options.run_dir,
        federation.config,
        echo=lambda _: None,
        timeout=RUN_LIMIT_S,
    )
    records = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["round"] > 0]
    assert [r["round"] for r in trained] == [1, 2]
    assert all(r["sites_trained"] == 3 and r["site_failures"] == 0 for r in trained)
    epsilons = [r["privacy"]["epsilon"] for r in trained]
    assert all(set(e) == {"0", "1", "2"} for e in epsilons)
    assert all(0 < epsilons[0][s] < epsilons[1][s] for s in epsilons[0])  # spent, growing
    assert (results / "adapters.pt").is_file() and (results / "checkpoint.pt").is_file()
    page = parse(results / "report.html")  # the SuperLink's run folder holds the report
    assert_self_contained(page)
    assert [int(row[0]) for row in page.tables["rounds"][1:]] == [r["round"] for r in records]
    shown = {row[0]: float(row[1]) for row in page.tables["privacy"][1:]}
    assert shown == pytest.approx(epsilons[-1], rel=1e-3)
    log = (federation.link.options.run_dir / "flwr-run-results.log").read_text().splitlines()
    # Flower's lines come twice: in its own format, and again through the root logger's
    # handler, whose format is whoever first configured it (Opacus: a timestamp first;
    # logging's default: "INFO:flwr:..."). Count Flower's own.
    own = [line for line in log if not line[:1].isdigit() and ":flwr:" not in line]
    assert sum(1 for line in own if line.endswith("Secure aggregation completed.")) == 2
    assert _online_nodes(federation) == 3
    # each site's one long-lived process served every message of the run (its name query,
    # then four protocol stages a round), counting them one by one: torch, the backbone and
    # the data loaded once (that it stops with its SuperNode: the Ctrl+C test below)
    (run_id,) = {int(m[1]) for m in map(STARTED.search, log) if m}
    servers = set()
    for node in federation.supernodes:
        served = _served(node.log_file, run_id)
        assert len({pid for pid, _ in served}) == 1, f"{node.log_file}: {served}"
        assert [count for _, count in served] == list(range(1, len(served) + 1))
        assert len(served) >= 1 + 4 * federation.config.federation.num_rounds
        servers.add(served[0][0])
    assert len(servers) == 3 and all(alive(pid) for pid in servers)


def test_without_central_eval_the_superlinks_machine_never_opens_the_backbone(
    federation: Federation, processes: Processes
) -> None:
    """The operator holds the sealed artifact and the owner's verification key but not the
    key that decrypts it (a path that does not exist): opening the backbone there fails, so
    a run that completes never opened it; its shapes came from the signed manifest."""
    absent = federation.run_dir / "operator-holds-no-content.key"
    config = tiny_config(
        "federation.num_rounds=1",
        "federation.central_eval=false",
        f"backbone.artifact={federation.owner.artifact}",
        f"backbone.verify_key={federation.owner.verify_key}",
        f"backbone.content_key={absent}",
    )
    with pytest.raises(ArtifactError, match="content key file not found"):
        open_backbone(config)  # what the server would do, were it to open one
    results = flwr_run(
        processes,
        federation.link.options.run_dir,
        config,
        echo=lambda _: None,
        timeout=RUN_LIMIT_S,
        name="no-backbone",
    )
    records = [json.loads(line) for line in (results / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if r["round"] > 0] == [1]
    assert not any("validation" in r for r in records)  # nothing scored on the server
    assert records[-1]["sites_trained"] == 3 and not absent.exists()


def test_ctrl_c_on_the_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    micro = ["backbone.name=fedgray-micro", "backbone.pretrained=null", "data.train_size=40"]
    demo = subprocess.Popen(
        [sys.executable, "-m", "fedgray.cli", "deploy", "demo", "--sites", "3"]
        + ["--out", str(tmp_path)]
        + [arg for item in micro for arg in ("--set", item)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("SuperNode 2 ->"):
                break
        started: list[int] = []
        deadline = time.monotonic() + 60
        while len(started) < 8 and time.monotonic() < deadline:  # SuperLink, 3 SuperNodes
            time.sleep(0.5)  # and each one's flower-superexec
            started = [pid for pid in descendants(demo.pid) if pid != demo.pid]
        assert len(started) >= 8
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
        assert "every process it started is stopped" in demo.stderr.read()
        assert not [pid for pid in started if alive(pid)]
    finally:
        if demo.poll() is None:  # the test failed: stop the demo's whole tree ourselves
            leftover = Processes()
            leftover.started.append(demo)
            leftover.stop()
