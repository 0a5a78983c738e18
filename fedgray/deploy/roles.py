"""The two long-running roles: the operator's SuperLink and a site's SuperNode.

Each ``start_*`` checks what it can before starting anything (one line naming the missing
file or directory), starts the Flower process under a :class:`Processes` and returns it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

from fedgray.backbone.keys import read_verify_key
from fedgray.deploy.credentials import Credentials, registered_key
from fedgray.deploy.fleet_proxy import PROXY_DIR, FleetProxy, start_fleet_proxy
from fedgray.deploy.locks import holder, record_holder, try_lock
from fedgray.deploy.tls_probe import check_transport
from fedgray.fl.clientapp.floor import Floor
from fedgray.fl.clientapp.node_config import (
    DATA_DIR,
    STATE_DIR,
    backbone_fields,
    check_data_dir,
)
from fedgray.fl.clientapp.signed_runs import PUBLISHER_KEY
from fedgray.launch.commands import (
    SuperLinkOptions,
    SuperNodeOptions,
    flower_env,
    register_supernode,
    superexec_command,
    superlink_command,
    supernode_command,
    wait_until_serving,
    write_cli_config,
)
from fedgray.launch.doorbell import BELL_ENV, BELL_FILE
from fedgray.launch.doorbell import install as install_bell
from fedgray.launch.processes import Processes, wait_for_port

Echo = Callable[[str], None]
RESIDENT_CLIENTAPPS = "fedgray.fl.clientapp.resident"
SUPERNODE_RUNNER = "fedgray.deploy.supernode_runner"
SECRET_FILE = "superexec.secret"
LOCK_FILE = "superlink.lock"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
ACTIVATED = "SuperNode ID:"  # Flower's log line once the SuperLink activated the node
ACTIVATION_REFUSED = "Failed to activate SuperNode"
REJOIN_DELAY_S = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL
"""How long the SuperLink counts a SuperNode online after its last heartbeat (Flower 1.42):
one that stopped without signing off (killed) cannot be activated again until then."""
INSECURE_WARNING = (
    "WARNING: --insecure: no TLS and no SuperNode authentication; anyone who reaches the "
    "port can join the federation or read what travels"
)


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


class RunDirBusy(RuntimeError):
    """A SuperLink already runs on the run folder."""


def lock_run_dir(run_dir: Path) -> int:
    """An open descriptor holding ``run_dir/superlink.lock``, or one line naming the process
    that holds it: two SuperLinks on one folder would share its state database, secret and
    results."""
    fd = try_lock(run_dir / LOCK_FILE)
    if fd is None:
        raise RunDirBusy(
            f"--run-dir {run_dir}: a SuperLink (pid {holder(run_dir / LOCK_FILE)}) runs on it "
            "already; stop it first, or give another --run-dir"
        )
    return fd


@dataclass(frozen=True)
class SuperLink:
    """A started SuperLink: its process, address, and the ``flwr`` CLI home that reaches it."""

    process: subprocess.Popen
    options: SuperLinkOptions
    flwr_home: Path
    node_ids: dict[str, int]


def start_superlink(
    processes: Processes,
    options: SuperLinkOptions,
    credentials: Credentials | None,
    *,
    register: bool = True,
    echo: Echo = print,
) -> SuperLink:
    """Start the SuperLink (cwd: the run folder, so a relative ``output.root`` lands there),
    write the ``flwr`` connection into ``RUN/flwr``, and register every site's public key
    (not with ``register=False``: a restart on the same database keeps the registrations)."""
    if options.insecure:
        _warn(INSECURE_WARNING)
    elif credentials is None:
        raise ValueError("the SuperLink needs credentials unless --insecure is given")
    if options.public is not None and (options.insecure or options.host != LOOPBACK):
        raise ValueError(f"--public: needs TLS and the SuperLink on --host {LOOPBACK}")
    lock = lock_run_dir(options.run_dir)
    flwr_home = options.run_dir / "flwr"
    options = dataclasses.replace(options, superexec_secret=superexec_secret(options.run_dir))
    assert options.superexec_secret is not None
    try:  # the reaper inherits the lock: it lasts as long as the SuperLink's tree,
        process = processes.start(  # also if this command is killed
            superlink_command(options),
            log_file=options.run_dir / "superlink.log",
            env=flower_env(flwr_home),
            cwd=options.run_dir,
            pass_fds=(lock,),
        )
        record_holder(lock, process.pid)
    finally:
        os.close(lock)
    wait_for_port(options.host, options.port, timeout=STARTUP_TIMEOUT_S, process=process)
    processes.start(
        superexec_command(
            options.local_address,
            root_cert=None if options.insecure else options.ca_cert,
            secret=options.superexec_secret,
            parent_pid=process.pid,
        ),
        log_file=options.run_dir / "superlink.log",  # one log per role
        env=flower_env(flwr_home),
        cwd=options.run_dir,
    )
    if options.public is not None:
        assert options.cert and options.key and options.ca_cert
        proxy = FleetProxy(
            *options.public,
            upstream=options.address,
            cert=options.cert,
            key=options.key,
            ca_cert=options.ca_cert,
            folder=options.run_dir / PROXY_DIR,
        )
        start_fleet_proxy(processes, proxy)
        echo(f"Fleet API only on {proxy.host}:{proxy.port} (nginx: {proxy.folder})")
    write_cli_config(
        flwr_home, options.local_address, options.ca_cert if not options.insecure else None
    )
    wait_until_serving(flwr_home, timeout=STARTUP_TIMEOUT_S, process=process)
    node_ids: dict[str, int] = {}
    if register and credentials is not None and not options.insecure:
        for site in credentials.sites:
            node_ids[site.name] = register_supernode(
                registered_key(credentials, site), flwr_home, name=site.name
            )
            echo(f"registered {site.name} as SuperNode {node_ids[site.name]}")
    echo(f"SuperLink on {options.address} (log: {options.run_dir / 'superlink.log'})")
    return SuperLink(process, options, flwr_home, node_ids)


def check_node_config(node_config: Mapping[str, str | int | float | bool]) -> None:
    """Fail before starting anything if the site's data, backbone (files or runtime socket)
    or publisher key files are missing or unreadable, or its privacy floor is malformed (an
    epsilon limit needs a state folder for its ledger)."""
    if DATA_DIR not in node_config:
        raise ValueError(f"node config: {DATA_DIR} is required")
    check_data_dir(Path(str(node_config[DATA_DIR])))
    floor = Floor.from_node_config(node_config)
    limits = (floor.max_epsilon_run, floor.max_epsilon_total)
    if any(v is not None for v in limits) and STATE_DIR not in node_config:
        raise ValueError(f"node config: an epsilon limit needs {STATE_DIR} (the site's ledger)")
    if PUBLISHER_KEY in node_config:
        read_verify_key(Path(str(node_config[PUBLISHER_KEY])))
    backbone_fields(node_config)


@dataclass(frozen=True)
class SuperNode:
    """A started SuperNode: its process, options, and its folder (log, FLWR_HOME)."""

    process: subprocess.Popen
    options: SuperNodeOptions
    site_dir: Path
    log_start: int = 0
    """Where this start's lines begin in :attr:`log_file` (earlier starts append to it)."""

    @property
    def log_file(self) -> Path:
        """The SuperNode's log."""
        return self.site_dir / "supernode.log"

    def exit_reason(self) -> str:
        """Why the SuperNode exited, in one line: an activation refused for a key this site
        folder has used before is Flower's rejoin delay, not a missing registration."""
        text = self.log_file.read_bytes() if self.log_file.is_file() else b""
        earlier, now = text[: self.log_start], text[self.log_start :]
        if ACTIVATION_REFUSED.encode() in now:
            if ACTIVATED.encode() in earlier:
                return (
                    "the SuperLink refused this site's key: it still counts this site's "
                    "previous SuperNode online (stopped without signing off, e.g. killed) "
                    f"until {REJOIN_DELAY_S:.0f} s after its last heartbeat; start it again "
                    f"then (see {self.log_file})"
                )
            return (
                "the SuperLink refused this site's key: it is not registered there (the "
                f"operator registers it with flwr supernode register; see {self.log_file})"
            )
        return (
            f"flower-supernode exited with status {self.process.returncode} (see {self.log_file})"
        )


def superexec_secret(folder: Path) -> Path:
    """``folder/superexec.secret``: 32 random bytes (mode 0600), made once and kept (a
    restarted role keeps it), shared by a SuperLink or SuperNode and the SuperExec that
    launches its apps, so that no one else can claim their tasks."""
    path = folder / SECRET_FILE
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path


def start_supernode(
    processes: Processes, options: SuperNodeOptions, *, site_dir: Path, echo: Echo = print
) -> SuperNode:
    """Start one site's SuperNode after checking its node config; its FLWR_HOME and log
    in ``site_dir``. Its messages go to one long-lived ClientApp process
    (:mod:`fedgray.fl.clientapp.resident`) that runs only fedgray's installed ClientApp
    (:mod:`fedgray.fl.clientapp.trusted`), rung by the SuperNode when a message is in
    (:mod:`fedgray.launch.doorbell`)."""
    if options.insecure:
        _warn(INSECURE_WARNING)
    check_node_config(options.node_config)
    check_transport(options.superlink, insecure=options.insecure)
    if STATE_DIR in options.node_config:  # its ledger and personal adapters: only the site's
        Path(str(options.node_config[STATE_DIR])).mkdir(mode=0o700, parents=True, exist_ok=True)
    options = dataclasses.replace(options, superexec_secret=superexec_secret(site_dir))
    assert options.superexec_secret is not None
    bell = install_bell(site_dir / BELL_FILE)  # rung by the SuperNode, heard by its apps
    env = flower_env(site_dir / "flwr", {BELL_ENV: str(bell)})
    log_file = site_dir / "supernode.log"
    log_start = log_file.stat().st_size if log_file.is_file() else 0
    node = SuperNode(
        processes.start(  # flower-supernode's own arguments (see the runner's docstring)
            [sys.executable, "-m", SUPERNODE_RUNNER, *supernode_command(options)[1:]],
            log_file=site_dir / "supernode.log",
            env=env,
            cwd=site_dir,
        ),
        options,
        site_dir,
        log_start,
    )
    superexec = superexec_command(
        f"127.0.0.1:{options.port}",
        root_cert=None,
        secret=options.superexec_secret,
        parent_pid=node.process.pid,
    )
    processes.start(  # it retries until the SuperNode's runtime API listens
        [sys.executable, "-m", RESIDENT_CLIENTAPPS, *superexec[1:]],  # flower-superexec's args
        log_file=site_dir / "supernode.log",  # one log per role: its app writes here
        env=env,
        cwd=site_dir,
    )
    site = options.node_config.get("partition-id", "")
    echo(f"SuperNode {site} -> {options.superlink} (log: {node.log_file})")
    return node
