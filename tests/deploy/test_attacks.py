"""Attacks on a running loopback federation, written as an attacker would write them.

Whoever can submit a run tries to make the sites run their code (read the site's data
folder and keys) and to make a site train with its privacy off: the sites refuse both, and
nothing of the site is read. A SuperExec of the attacker's tries to claim ServerApp and
ClientApp tasks: it is refused. Whoever reaches the SuperLink's public address (``--public``)
tries the Control and runtime APIs: nginx answers 403, while sites still join through it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.demo import flwr_run
from fedgray.deploy.roles import start_superlink, start_supernode
from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.fl.clientapp.floor import LEDGER_FILE
from fedgray.fl.clientapp.trusted import UNTRUSTED_APP
from fedgray.launch.commands import (
    CONNECTION,
    LaunchError,
    SuperLinkOptions,
    SuperNodeOptions,
    flower_env,
    flower_executable,
    flwr_cli,
    flwr_json,
    flwr_run_to_end,
    write_cli_config,
)
from fedgray.launch.processes import Processes, free_port
from tests.deploy.conftest import RUN_LIMIT_S, Federation, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.deploy]
REFUSED_WITHIN_S = 60

THIEF = '''
"""A ClientApp that reads every file and folder the site's node config names, drops what
it read where the attacker can collect it, and sends it back; a ServerApp that asks every
site and writes their answers to the attacker's report."""
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def steal(msg: Message, context: Context) -> Message:
    loot = {}
    for key, value in context.node_config.items():
        path = Path(str(value))
        if path.is_file():
            loot[key] = path.read_bytes()[:64].hex()
        elif path.is_dir():
            loot[key] = ",".join(sorted(p.name for p in path.rglob("*"))[:20])
    drop = Path(context.run_config["drop"]) / f"node-{context.node_id}.json"
    drop.write_text(json.dumps(loot))
    return Message(RecordDict({"loot": ConfigRecord(loot)}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    nodes = []
    while len(nodes) < int(context.run_config["sites"]):
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    asks = [grid.create_message(RecordDict(), "query", n, "steal") for n in nodes]
    answers = []
    for reply in grid.send_and_receive(asks, timeout=120):
        if reply.has_error():
            answers.append({"code": reply.error.code, "reason": reply.error.reason})
        else:
            answers.append({"loot": dict(reply.content["loot"])})
    Path(context.run_config["report"]).write_text(json.dumps(answers))
'''


def _attack_app(folder: Path, *, clientapp: str, drop: Path, report: Path) -> Path:
    """The attacker's app folder: their ServerApp and ClientApp code, and a pyproject.toml
    naming ``clientapp`` as the sites' ClientApp."""
    folder.mkdir(parents=True)
    (folder / "thief.py").write_text(THIEF, encoding="utf-8")
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "thief"
            version = "1.0.0"
            license = "Apache-2.0"
            dependencies = []

            [tool.flwr.app]
            publisher = "attacker"

            [tool.flwr.app.components]
            serverapp = "thief:server"
            clientapp = "{clientapp}"

            [tool.flwr.app.config]
            drop = "{drop}"
            report = "{report}"
            sites = 3
            """
        ),
        encoding="utf-8",
    )
    return folder


@pytest.mark.parametrize(
    ("clientapp", "shadow", "verdict"),
    [
        ("thief:client", False, "its ClientApp is 'thief:client'"),
        ("fedgray.fl.clientapp.app:app", True, "carries files that are not inert data"),
    ],
    ids=["own-clientapp", "shadowed-fedgray"],
)
def test_an_app_carrying_its_own_code_is_refused_at_every_site(
    federation: Federation,
    processes: Processes,
    tmp_path: Path,
    clientapp: str,
    shadow: bool,
    verdict: str,
) -> None:
    """The thief's bundle names its own ClientApp, or fedgray's with a module of that name
    in the bundle to shadow the installed one. Every site answers with the untrusted-app
    refusal, logs one line, and nothing of any site is read: no drop, no loot."""
    drop, report = tmp_path / "drop", tmp_path / "report.json"
    drop.mkdir()
    app = _attack_app(tmp_path / "thief", clientapp=clientapp, drop=drop, report=report)
    if shadow:
        shadowed = app / "fedgray" / "fl" / "clientapp"
        shadowed.mkdir(parents=True)
        for init in (app / "fedgray", app / "fedgray" / "fl", shadowed):
            (init / "__init__.py").write_text("", encoding="utf-8")
        (shadowed / "app.py").write_text(
            THIEF.replace("client = ClientApp()", "app = client = ClientApp()"), encoding="utf-8"
        )
    home = federation.link.flwr_home
    status = flwr_run_to_end(
        processes,
        [flower_executable("flwr"), "run", str(app), CONNECTION, "--stream"],
        log_file=tmp_path / "flwr-run.log",
        env=flower_env(home),
        timeout=RUN_LIMIT_S,
    )
    assert status["status"] == "finished:completed", status
    answers = json.loads(report.read_text())
    assert len(answers) == 3
    assert all(a.get("code") == UNTRUSTED_APP and verdict in a["reason"] for a in answers), answers
    assert not any("loot" in a for a in answers)
    assert not list(drop.iterdir())
    for node in federation.supernodes:
        refused = [
            line
            for line in node.log_file.read_text().splitlines()
            if line.startswith("fedgray site: this site refuses app") and verdict in line
        ]
        assert len(refused) == 1, node.log_file


def test_a_run_with_privacy_off_is_refused_by_every_sites_floor(
    federation: Federation, processes: Processes
) -> None:
    """fedgray's own app, submitted with ``privacy.enabled=false`` (batches of one, no
    SecAgg+): each
    site's floor (``require-dp`` in its node config) refuses before training, the run ends
    naming the refusal, and no site's ledger records a step of it."""
    ledgers = [d.parent / "state" / LEDGER_FILE for d in federation.data_dirs]
    before = [p.read_text() if p.is_file() else None for p in ledgers]
    hostile = tiny_config(
        "privacy.enabled=false", "train.batch_size=1", "federation.secure_aggregation.enabled=false"
    )
    with pytest.raises(RuntimeError) as failed:
        flwr_run(
            processes,
            federation.link.options.run_dir,
            hostile,
            echo=lambda _: None,
            timeout=RUN_LIMIT_S,
            name="no-privacy",
        )
    assert "site floor: privacy.enabled is false, this site requires DP-SGD" in str(failed.value)
    assert [p.read_text() if p.is_file() else None for p in ledgers] == before
    results = federation.link.options.run_dir / "no-privacy"
    assert not (results / "adapters.pt").exists()


def test_a_superexec_without_the_secret_is_refused_by_superlink_and_supernodes(
    federation: Federation, processes: Processes, tmp_path: Path
) -> None:
    """The runtime APIs that hand out ServerApp and ClientApp tasks (run config, app bundle,
    the global adapters) answer only the SuperExec holding the role's secret: a SuperExec of
    the attacker's, pointed at the SuperLink's port or at a site's runtime port, is refused
    at its first request and exits (one without the secret would poll on and claim the
    next task), having launched nothing."""
    link = federation.link.options
    targets = {
        "superlink": [link.local_address, "--root-certificates", str(link.ca_cert)],
        "site-0": [f"127.0.0.1:{federation.supernodes[0].options.port}", "--insecure"],
    }
    rogues = {
        name: processes.start(
            [flower_executable("flower-superexec"), "--runtime-api-address", *target],
            log_file=tmp_path / f"rogue-{name}.log",
            env=flower_env(tmp_path / "flwr"),
            cwd=tmp_path,
        )
        for name, target in targets.items()
    }
    for name, rogue in rogues.items():
        rogue.wait(timeout=REFUSED_WITHIN_S)
        log = (tmp_path / f"rogue-{name}.log").read_text()
        assert "Starting Flower SuperExec" in log and "terminated" in log
        assert "flwr-serverapp" not in log and "flwr-clientapp" not in log
    refused = "SuperExec authentication failed for /flwr.proto.Runtime/AcquireTask"
    assert refused in (link.run_dir / "superlink.log").read_text()


def _post(address: str, path: str, ca_cert: Path) -> int:
    """The HTTP status of an empty protobuf POST to ``path``, as curl -X POST would send it."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    request = urllib.request.Request(
        f"https://{address}{path}",
        data=b"",
        method="POST",
        headers={"Content-Type": "application/protobuf"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_the_public_address_carries_only_the_fleet_api(
    tmp_path: Path, processes: Processes
) -> None:
    """With ``--public``, whoever reaches the public address with the federation's CA
    certificate cannot list, stop or submit runs, register or unregister SuperNodes, or
    poll for ServerApp tasks (nginx answers 403 before Flower sees the request), while a
    registered site joins through it and the operator's ``flwr`` works on loopback."""
    credentials = create_credentials(tmp_path / "creds", 1)
    public = ("127.0.0.1", free_port())
    options = SuperLinkOptions(
        "127.0.0.1",
        free_port(),
        tmp_path / "link",
        credentials.superlink_ca_cert,
        credentials.superlink_cert,
        credentials.superlink_key,
        public=public,
    )
    link = start_superlink(processes, options, credentials, echo=lambda _: None)
    address = f"{public[0]}:{public[1]}"
    attacker = tmp_path / "attacker"
    write_cli_config(attacker, address, credentials.ca_cert)
    rogue_key = create_credentials(tmp_path / "rogue", 1).sites[0].public_key
    for args in (
        ["list", CONNECTION],
        ["supernode", "list", CONNECTION],
        ["supernode", "register", str(rogue_key), CONNECTION],
        ["supernode", "unregister", str(link.node_ids["site-0"]), CONNECTION],
        ["stop", "1", CONNECTION],
    ):
        with pytest.raises(LaunchError) as refused:
            flwr_cli(args, attacker)
        assert "403 Forbidden" in str(refused.value), refused.value
    unproxied = tmp_path / "unproxied"  # the same attacker on the SuperLink's own port
    write_cli_config(unproxied, options.address, credentials.ca_cert)
    assert "runs" in flwr_json(["list", CONNECTION], unproxied)
    for path in ("/v1/control/list-runs", "/v1/runtime/acquire-task", "/docs"):
        assert _post(address, path, credentials.ca_cert) == 403, path
        assert _post(options.address, path, credentials.ca_cert) != 403, path  # unproxied
    config = tiny_config()
    data = write_partition_folders(config, 1, tmp_path / "sites")[0]
    site = credentials.sites[0]
    node = start_supernode(
        processes,
        SuperNodeOptions(
            address, site.ca_cert, site.private_key, {"data-dir": str(data)}, free_port()
        ),
        site_dir=tmp_path / "site",
        echo=lambda _: None,
    )
    deadline = time.monotonic() + RUN_LIMIT_S
    nodes: list[dict[str, object]] = []
    while time.monotonic() < deadline and not any(n["status"] == "online" for n in nodes):
        assert node.process.poll() is None, node.log_file.read_text()[-2000:]
        nodes = flwr_json(["supernode", "list", CONNECTION], link.flwr_home)["nodes"]
        time.sleep(1)
    assert [n["status"] for n in nodes] == ["online"]
    assert len(flwr_json(["supernode", "list", CONNECTION], link.flwr_home)["nodes"]) == 1
