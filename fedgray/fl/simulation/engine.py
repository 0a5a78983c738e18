"""``fedgray run``: the federated run in-process on Flower's simulation engine (Ray).

A run is checked before anything starts (:func:`open_run`, :mod:`fedgray.fl.serverapp.preflight`):
no run folder is created, and no resumed folder touched, for a run that cannot start.
Flower's and Ray's runtime files (``FLWR_HOME``, Ray's session) live in a temporary
directory removed afterwards, so a run folder holds results only; Flower's log, site
tracebacks included, goes to ``flower.log`` in the run folder instead of the terminal.
Ray is shut down at the end, also on errors. Simulated sites are multiplexed over
``federation.actors`` Ray actors (default 1): each actor is one process with one copy of
the backbone, and its torch threads use all cores, so one actor is as fast as two on a
small machine and needs half the memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedgray.config import Config, load_config
from fedgray.fl.common.run_config import require_federated_method
from fedgray.fl.serverapp.checkpoint import CHECKPOINT
from fedgray.fl.serverapp.failures import FederationError
from fedgray.fl.serverapp.preflight import preflight
from fedgray.fl.serverapp.server import Echo, FederationResult
from fedgray.runs import RunFolder

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
    ``output`` says, and its folder is not written to here.
    """
    if resume is not None:
        if config_path is not None:
            raise ValueError("give either CONFIG or --resume RUN_DIR, not both")
        if not (resume / CHECKPOINT).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {resume / CHECKPOINT}")
        config = require_federated_method(load_config(resume / "config.yaml", overrides))
        config.output.root, config.output.name = str(resume.parent), resume.name
        note = preflight(config, resume=resume)
        if note:
            echo(note)
        return config, RunFolder(resume.parent, resume.name)
    if config_path is None:
        raise ValueError("a CONFIG file is needed (or --resume RUN_DIR)")
    config = require_federated_method(load_config(config_path, overrides))
    if (
        config.output.name
        and (Path(config.output.root) / config.output.name / CHECKPOINT).is_file()
    ):
        where = Path(config.output.root) / config.output.name
        raise ValueError(f"{where} already holds a run: continue it with --resume {where}")
    preflight(config)
    run = RunFolder(config.output.root, config.output.name, prefix="federated")
    config.output.name = run.path.name  # the sites keep their own state under it
    return config, run


RUNTIME_PREFIX = "fedgray-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _processes_using(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (Ray's workers name their session dir)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if str(folder) in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def sweep_stale_runtimes() -> list[Path]:
    """Remove the runtime dirs of runs that were killed (kill -9 leaves no chance to clean),
    stopping what still runs from them (Ray's agents outlive their driver for a while)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        for pid in _processes_using(folder):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def isolated_flower() -> Iterator[Path]:
    """Point Flower and Ray at a fresh temporary directory for the duration (removed after);
    yields Ray's temp dir. Short, under the system temp dir: Ray's AF_UNIX socket paths
    stop at 107 bytes. Dirs left by killed runs are swept first."""
    sweep_stale_runtimes()
    runtime = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
    env = {
        "FLWR_HOME": str(runtime / "flwr"),
        "RAY_TMPDIR": str(runtime / "ray"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        # Ray's C++ failure handler turns SIGTERM into an abort (exit 134, workers left
        # behind); without it, ray.init's Python handler raises SystemExit(SIGTERM), which
        # fedgray run stops on as on Ctrl-C
        "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
    }
    for folder in ("flwr", "ray"):  # Flower creates its home only on first use
        (runtime / folder).mkdir()
    (runtime / OWNER_FILE).write_text(str(os.getpid()))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield runtime / "ray"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(runtime, ignore_errors=True)


@contextmanager
def flower_log_file(path: Path) -> Iterator[None]:
    """Flower's log (its warnings, site tracebacks) to ``path`` only, for the duration.

    Progress comes from fedgray's own lines; Flower's console handler would print a
    traceback per failed site message. open_clip's root-logger warnings install a root
    handler, so propagation stops too.
    """
    flower = logging.getLogger("flwr")
    saved = (flower.level, flower.propagate, list(flower.handlers))
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for old in saved[2]:
        flower.removeHandler(old)
    flower.addHandler(handler)
    flower.setLevel(logging.INFO)
    flower.propagate = False
    try:
        yield
    finally:
        flower.removeHandler(handler)
        handler.close()
        for old in saved[2]:
            flower.addHandler(old)
        flower.setLevel(saved[0])
        flower.propagate = saved[1]


def run_federation(
    config: Config, run: RunFolder, *, echo: Echo = print
) -> tuple[FederationResult, dict[str, Any]]:
    """Simulate ``config.federation.num_sites`` sites with ``run_simulation``; write ``run``."""
    fed = config.federation
    outcome: dict[str, Any] = {}
    with isolated_flower() as ray_temp, flower_log_file(run.path / FLOWER_LOG):
        import ray
        from flwr.simulation import run_simulation

        from fedgray.fl.clientapp.app import make_client_app
        from fedgray.fl.serverapp.app import make_server_app

        cpus = os.cpu_count() or 1

        def keep(result: FederationResult, summary: dict[str, Any]) -> None:
            outcome.update(r=result, s=summary)

        def fail(error: BaseException) -> None:
            outcome["error"] = error

        try:
            run_simulation(
                server_app=make_server_app(
                    config, run_dir=run.path, echo=echo, on_result=keep, on_error=fail
                ),
                client_app=make_client_app(config, quiet=True),
                num_supernodes=fed.num_sites,
                backend_config={
                    "init_args": {
                        "num_cpus": cpus,
                        "num_gpus": 0,
                        "_temp_dir": str(ray_temp),
                        "logging_level": "ERROR",
                        "log_to_driver": False,  # site output goes to the sites' replies
                    },
                    "client_resources": {"num_cpus": cpus / fed.actors, "num_gpus": 0.0},
                },
            )
        finally:
            if ray.is_initialized():
                ray.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    if "r" not in outcome:
        raise FederationError(
            f"the simulation ended without a result (see {run.path / FLOWER_LOG})"
        )
    return outcome["r"], outcome["s"]
