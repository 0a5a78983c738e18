"""``fedgray run``: the federation on Flower's own local simulation, as ``flwr run`` runs it.

Flower 1.42 deprecates the in-process ``run_simulation``; what it recommends is a SuperLink
in simulation mode that ``flwr run`` submits the app to. ``fedgray run`` does exactly that,
privately: it starts ``flower-superlink --simulation`` on a free loopback port, submits the
fedgray app (the whole config as one document, :func:`fedgray.launch.app_folder.write_app`) with
``flwr run --stream``, prints the ServerApp's lines as it writes them to ``progress.log``,
reads the run's status with ``flwr list`` at the end, and stops every process it started
(SuperLink, the simulation, Ray), also on Ctrl-C, SIGTERM or failure.

A run is checked before anything starts (:func:`open_run`, :mod:`fedgray.fl.serverapp.preflight`):
no run folder is created, and no resumed folder touched, for a run that cannot start.
Flower's and Ray's files (``FLWR_HOME``, the SuperLink's database, Ray's session)
live in a temporary directory removed afterwards (:mod:`fedgray.fl.simulation.flower_home`), so
a run folder holds results only; Flower's log, site tracebacks included, goes to
``flower.log`` in the run folder instead of the terminal. Simulated sites are multiplexed
over ``federation.actors`` Ray actors (default 1): each actor is one process with one copy
of the backbone, and its torch threads use all cores, so one actor is as fast as two on a
small machine and needs half the memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from fedgray.config import Config, FederationConfig
from fedgray.fl.serverapp.checkpoint import CHECKPOINT
from fedgray.fl.serverapp.failures import FederationError
from fedgray.fl.serverapp.preflight import preflight
from fedgray.fl.serverapp.progress import PROGRESS, Follower
from fedgray.fl.serverapp.server import Echo
from fedgray.fl.simulation.flower_home import flower_home
from fedgray.launch.app_folder import write_app
from fedgray.launch.commands import (
    CONNECTION,
    LaunchError,
    SuperLinkOptions,
    config_arg,
    flower_env,
    flower_executable,
    flwr_run_to_end,
    superlink_command,
    write_cli_config,
)
from fedgray.launch.processes import free_port, supervised, wait_for_port
from fedgray.owner.pretrain import resolve_pretrained
from fedgray.resolver import load_config
from fedgray.runs import RunFolder, check_writable
from fedgray.train.kinds import refuse_unsupported

FLOWER_LOG = "flower.log"


def open_run(
    config_path: str | None,
    overrides: list[str],
    *,
    resume: Path | None,
    echo: Echo = print,
) -> tuple[Config, RunFolder]:
    """The config and run folder of a fresh run, or of the run in ``resume`` to continue.

    Everything checkable is checked first (:func:`~fedgray.fl.serverapp.preflight.preflight`); only
    then is a fresh run's folder created. A resumed run stays in its folder whatever
    ``output`` says, and its folder is not written to here. ``resume`` is resolved first:
    ``.``, ``./``, a symlink or a trailing slash all name the folder itself (``Path('.')``
    has no name, and a run made under it would start its privacy ledgers from zero).
    """
    if resume is not None:
        if config_path is not None:
            raise ValueError("give either CONFIG or --resume RUN_DIR, not both")
        resume = resume.resolve()
        if not (resume / CHECKPOINT).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {resume / CHECKPOINT}")
        check_writable(resume)
        config = refuse_unsupported(load_config(resume / "config.yaml", overrides))
        config.output.root, config.output.name = str(resume.parent), resume.name
        note = preflight(config, resume=resume)
        if note:
            echo(note)
        return config, RunFolder(resume.parent, resume.name)
    if config_path is None:
        raise ValueError("a CONFIG file is needed (or --resume RUN_DIR)")
    config = refuse_unsupported(load_config(config_path, overrides))
    if (
        config.output.name
        and (Path(config.output.root) / config.output.name / CHECKPOINT).is_file()
    ):
        where = Path(config.output.root) / config.output.name
        raise ValueError(f"{where} already holds a run: continue it with --resume {where}")
    check_writable(Path(config.output.root) / (config.output.name or ""))
    preflight(config)
    run = RunFolder(config.output.root, config.output.name, prefix="federated")
    config.output.name = run.path.name  # the sites keep their own state under it
    return config, run


HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def simulation_config(fed: FederationConfig) -> dict[str, str | int | float | bool]:
    """``flwr run --federation-config`` for a simulation SuperLink: one SuperNode per site,
    ``federation.actors`` Ray actors sharing the cores (whole CPUs each: Flower 1.42 takes
    integers), Ray quiet (sites reply, they do not print)."""
    cpus = os.cpu_count() or 1
    return {
        "num-supernodes": fed.num_sites,
        "client-resources-num-cpus": max(1, cpus // fed.actors),
        "client-resources-num-gpus": 0.0,
        "init-args-num-cpus": cpus,
        "init-args-num-gpus": 0,
        "init-args-logging-level": "ERROR",
        "init-args-log-to-driver": False,
    }


def _submitted(config: Config, run: RunFolder) -> Config:
    """``config`` writing into ``run`` wherever the ServerApp's working directory is."""
    where = run.path.resolve()
    output = dataclasses.replace(config.output, root=str(where.parent), name=where.name)
    return dataclasses.replace(config, output=output)


def run_federation(config: Config, run: RunFolder, *, echo: Echo = print) -> dict[str, Any]:
    """Run the federation ``config`` describes into ``run`` (see the module docstring); its
    summary. A run that fails raises FederationError with its one-line reason; SIGINT and
    SIGTERM raise :class:`~fedgray.launch.processes.Stopped` once everything is stopped."""
    spec = config.backbone
    if spec.artifact is None and spec.runtime is None:
        # The owner's built-in model, pretrained here if it is not cached yet, before any
        # site's process would on its first message (each on its one thread, in parallel).
        resolve_pretrained(spec.name, spec.pretrained, config.pretrain)
    log = run.path / FLOWER_LOG
    with flower_home() as home, supervised() as processes:
        flwr_home = home / "flwr"
        env = flower_env(flwr_home, {**RAY_ENV, "RAY_TMPDIR": str(home / "ray")})
        link = SuperLinkOptions(
            host=HOST,
            port=free_port(HOST),
            run_dir=home,
            ca_cert=None,
            cert=None,
            key=None,
            insecure=True,  # loopback only, and nobody else knows the port
            simulation=True,
        )
        superlink = processes.start(superlink_command(link), log_file=log, env=env, cwd=home)
        try:
            wait_for_port(HOST, link.port, timeout=STARTUP_TIMEOUT_S, process=superlink)
        except (RuntimeError, TimeoutError) as error:
            raise FederationError(f"the local SuperLink did not start: {error}") from error
        write_cli_config(flwr_home, link.address, None)
        app = write_app(_submitted(config, run), home / "app")
        submit = [flower_executable("flwr"), "run", str(app), CONNECTION, "--stream"]
        submit += ["--federation-config", config_arg(simulation_config(config.federation))]
        with Follower(run.path / PROGRESS, echo) as follower:
            try:
                status = flwr_run_to_end(
                    processes, submit, log_file=log, env=env, superlink=superlink
                )
            except LaunchError as error:
                raise FederationError(str(error)) from error
    if follower.error is not None:
        raise FederationError(follower.error)
    if status["status"] != "finished:completed" or not (run.path / "summary.json").is_file():
        raise FederationError(
            f"the run ended {status['status']} ({status.get('status-details', 'no details')})"
        )
    return dict(json.loads((run.path / "summary.json").read_text()))
