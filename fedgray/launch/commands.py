"""Command lines for Flower 1.42's deployment engine, and the ``flwr`` CLI's connection config.

Flower 1.42 serves each SuperLink API (Fleet for SuperNodes, Control for ``flwr``, the
runtime API for its ServerApp) over one HTTPS port; a SuperNode serves its ClientApps' runtime
API on a port of its own, on loopback. Everything here builds argument lists for Flower's
own executables (checked against ``--help`` of the installed 1.42): nothing home-made
travels between machines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgray.launch.processes import Processes

CONNECTION = "fedgray"
"""The name of the SuperLink connection in Flower's CLI config (``$FLWR_HOME/config.toml``)."""
STARTED = re.compile(r"Successfully started run (\d+)")
STATUS_POLL_S = 2.0


class LaunchError(RuntimeError):
    """A Flower executable is missing or one of its commands failed."""


def flower_executable(name: str) -> str:
    """Path of a Flower console script: next to this Python first (the venv), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"{name}: not found next to {sys.executable} nor on PATH")
    return found


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Flower process: its FLWR_HOME, no telemetry, no update check,
    no runtime installs, and this Python's bin folder first on PATH (Flower starts
    ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name)."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",  # no network calls of its own
        PYTHONUNBUFFERED="1",  # each line reaches the log at once, even if it exits hard
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class SuperLinkOptions:
    """How the operator's SuperLink runs: address, TLS files (None with ``insecure``),
    where its state database and log go, and whether it simulates its SuperNodes itself
    (``simulation``: ``fedgray run``'s local federation, as ``flwr run`` starts one).
    ``public``: the address SuperNodes dial, served by a proxy that passes on only the
    Fleet API (:mod:`fedgray.deploy.fleet_proxy`); the SuperLink then listens on loopback."""

    host: str
    port: int
    run_dir: Path
    ca_cert: Path | None
    cert: Path | None
    key: Path | None
    insecure: bool = False
    simulation: bool = False
    superexec_secret: Path | None = None
    public: tuple[str, int] | None = None

    @property
    def address(self) -> str:
        """``host:port`` as SuperNodes and ``flwr`` dial it."""
        return f"{self.host}:{self.port}"

    @property
    def local_address(self) -> str:
        """``host:port`` as a process on the SuperLink's machine dials it (loopback when
        it listens on every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"


def _isolation(secret: Path | None) -> list[str]:
    """Process isolation with SuperExec authentication: Flower 1.42 honours the secret only
    when the SuperExec is started apart (``--isolation process``), not as its own child."""
    if secret is None:
        return []
    return ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]


def superexec_command(
    runtime_address: str, *, root_cert: Path | None, secret: Path, parent_pid: int
) -> list[str]:
    """``flower-superexec`` for a SuperLink's ServerApps or a SuperNode's ClientApps,
    authenticated to its runtime API with the shared ``secret`` (TLS verified with
    ``root_cert``, or plain on loopback when it is None). It ends, and its apps with it,
    when ``parent_pid`` (the role's process) does, as under subprocess isolation: a
    ServerApp must not outlive a killed SuperLink and go on against its successor."""
    tls = ["--insecure"] if root_cert is None else ["--root-certificates", str(root_cert)]
    return [
        flower_executable("flower-superexec"),
        "--runtime-api-address",
        runtime_address,
        *tls,
        "--superexec-auth-secret-file",
        str(secret),
        "--parent-pid",
        str(parent_pid),
    ]


def superlink_command(options: SuperLinkOptions) -> list[str]:
    """``flower-superlink`` with TLS and SuperNode authentication (or ``--insecure`` without
    either), no runtime dependency installation, state and log in the run folder."""
    args = [flower_executable("flower-superlink")]
    if options.insecure:
        args.append("--insecure")
    else:
        assert options.ca_cert and options.cert and options.key
        args += [
            "--ssl-ca-certfile",
            str(options.ca_cert),
            "--ssl-certfile",
            str(options.cert),
            "--ssl-keyfile",
            str(options.key),
            "--enable-supernode-auth",
        ]
    if options.simulation:
        args.append("--simulation")
    return [
        *args,
        *_isolation(options.superexec_secret),
        "--disable-runtime-dependency-installation",
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--database",
        str(options.run_dir / "superlink.db"),
    ]


@dataclass(frozen=True)
class SuperNodeOptions:
    """One site's SuperNode: the SuperLink it dials, its credentials (None with
    ``insecure``), its node config, and the loopback port of its ClientApps' runtime API."""

    superlink: str
    root_cert: Path | None
    private_key: Path | None
    node_config: Mapping[str, str | int | float | bool]
    port: int
    insecure: bool = False
    max_wait_time: float | None = None
    superexec_secret: Path | None = None


def _toml_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def config_arg(pairs: Mapping[str, str | int | float | bool]) -> str:
    """The value of Flower's ``--node-config`` or ``--federation-config``: space-separated
    ``key=value`` pairs, values in TOML."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in pairs.items())


def supernode_command(options: SuperNodeOptions) -> list[str]:
    """``flower-supernode`` verifying the SuperLink with the federation's CA and
    authenticating with the site's key (or ``--insecure`` without either)."""
    args = [flower_executable("flower-supernode"), "--superlink", options.superlink]
    if options.insecure:
        args.append("--insecure")
    else:
        assert options.root_cert and options.private_key
        args += [
            "--root-certificates",
            str(options.root_cert),
            "--auth-supernode-private-key",
            str(options.private_key),
        ]
    if options.max_wait_time is not None:
        args += ["--max-wait-time", str(options.max_wait_time)]
    return [
        *args,
        *_isolation(options.superexec_secret),
        "--node-config",
        config_arg(options.node_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(options.port),
    ]


def write_cli_config(flwr_home: Path, address: str, root_cert: Path | None) -> Path:
    """Flower's CLI config in ``flwr_home`` with one default connection, :data:`CONNECTION`
    (TLS verified with ``root_cert``, or insecure when it is None)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = (
        "insecure = true"
        if root_cert is None
        else f"root-certificates = {json.dumps(str(root_cert))}"
    )
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{address}"\n{security}\n',
        encoding="utf-8",
    )
    return path


def flwr_cli(args: Sequence[str], flwr_home: Path, *, timeout: float = 60.0) -> str:
    """Run ``flwr ARGS`` against :data:`CONNECTION`; its output, or one line on failure."""
    command = [flower_executable("flwr"), *args]
    done = subprocess.run(
        command,
        env=flower_env(flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        said = error_text(f"{done.stdout}\n{done.stderr}".splitlines())
        raise LaunchError(f"flwr {' '.join(args[:2])}: exit {done.returncode}: {said}")
    return done.stdout


def flwr_json(args: Sequence[str], flwr_home: Path) -> dict[str, Any]:
    """``flwr ARGS --format json``'s reply (after the "Using SuperLink" line it prints first);
    LaunchError with its message when it reports a failure (it exits 0 then, for example
    when the SuperLink does not answer)."""
    out = flwr_cli([*args, "--format", "json"], flwr_home)
    reply = dict(json.loads(out[out.index("{") :]))
    if reply.get("success") is False:
        said = str(reply.get("error-message", "no message")).splitlines()
        raise LaunchError(f"flwr {' '.join(args[:2])}: {said[-1].strip() if said else ''}")
    return reply


def wait_until_serving(
    flwr_home: Path, *, timeout: float, process: subprocess.Popen | None = None
) -> None:
    """Return once the SuperLink answers ``flwr list`` over the connection in ``flwr_home``:
    its port can accept connections a moment before its Control API serves (a restarted
    SuperLink on a loaded machine), and a run submitted then fails as "unavailable"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            flwr_json(["list", CONNECTION], flwr_home)
            return
        except (LaunchError, ValueError, subprocess.TimeoutExpired):
            if process is not None and process.poll() is not None:
                raise LaunchError(f"the SuperLink exited ({process.returncode})") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(STATUS_POLL_S / 4)


def register_supernode(public_key: Path, flwr_home: Path, *, name: str) -> int:
    """Register a site's public key with the SuperLink (``flwr supernode register``, as
    Flower 1.42 does node authentication); the node id the SuperLink assigned."""
    reply = flwr_json(
        ["supernode", "register", str(public_key), CONNECTION, "--name", name], flwr_home
    )
    return int(reply["node-id"])


def last_error(log: Path) -> str:
    """The last error in a Flower log (see :func:`error_text`)."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    return error_text(lines)


def error_text(lines: Sequence[str]) -> str:
    """The text of the ``flwr`` CLI's last error box in ``lines``, else the last line that
    reports an error (Flower logs and continues)."""
    for at in range(len(lines) - 1, -1, -1):
        if "─ Error ─" in lines[at]:
            box = []
            for line in lines[at + 1 :]:
                if line.startswith("╰"):
                    break
                box.append(line.strip("│ \t"))
            return " ".join(" ".join(box).split())
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return errors[-1].strip() if errors else "no error logged"


def finished_run(
    flwr_home: Path, run_id: int, *, superlink: subprocess.Popen | None = None
) -> dict[str, Any]:
    """Run ``run_id``'s entry in ``flwr list`` once it has finished (polled; one line if
    ``superlink``, when given, stops first)."""
    while True:
        runs = flwr_json(["list", CONNECTION, "--run-id", str(run_id)], flwr_home)["runs"]
        if runs and str(runs[0]["status"]).startswith("finished"):
            return dict(runs[0])
        if superlink is not None and superlink.poll() is not None:
            raise LaunchError(f"the SuperLink stopped (exit code {superlink.returncode})")
        time.sleep(STATUS_POLL_S)


def flwr_run_to_end(
    processes: Processes,
    args: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str],
    timeout: float | None = None,
    superlink: subprocess.Popen | None = None,
) -> dict[str, Any]:
    """``flwr run ... --stream`` (``args``), its stream to ``log_file``, then the run it
    started followed to its end with ``flwr list``: the stream can end before the run does
    (a dropped connection, a restarted SuperLink), and ``flwr run`` exits 0 for a run that
    failed. The run's ``flwr list`` entry; LaunchError if no run started."""
    started: list[int] = []

    def note(line: str) -> None:
        if found := STARTED.search(line):
            started.append(int(found[1]))

    processes.run(args, log_file=log_file, env=env, timeout=timeout, echo=note)
    if not started:
        raise LaunchError(f"flwr run started no run: {last_error(log_file)}")
    return finished_run(Path(env["FLWR_HOME"]), started[0], superlink=superlink)
