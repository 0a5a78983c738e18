"""``fedgray run``: the federated run in-process on Flower's simulation engine (Ray).

Everything Flower and Ray write goes under the run folder: ``FLWR_HOME`` and Ray's temp dir
(reached through a short symlink in /tmp when the folder's path is too long for Ray's
AF_UNIX sockets; the link is removed afterwards). Ray is shut down at the end, also on
errors. Simulated sites are multiplexed over ``federation.actors`` Ray actors (default 1):
each actor is one process with one copy of the backbone, and its torch threads use all
cores, so one actor is as fast as two on a small machine and needs half the memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedgray.config import Config, load_config
from fedgray.fl.checkpoint import CHECKPOINT
from fedgray.fl.run_config import require_federated_method
from fedgray.fl.server import Echo, FederationResult
from fedgray.runs import RunFolder

MAX_RAY_TEMP = 40  # Ray adds ~70 bytes below its temp dir; AF_UNIX paths stop at 107


def open_run(
    config_path: str | None, overrides: list[str], *, resume: Path | None
) -> tuple[Config, RunFolder]:
    """The config and run folder of a fresh run, or of the run in ``resume`` to continue."""
    if resume is not None:
        if config_path is not None:
            raise ValueError("give either CONFIG or --resume RUN_DIR, not both")
        if not (resume / CHECKPOINT).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {resume / CHECKPOINT}")
        config = require_federated_method(load_config(resume / "config.yaml", overrides))
        return config, RunFolder(resume.parent, resume.name)
    if config_path is None:
        raise ValueError("a CONFIG file is needed (or --resume RUN_DIR)")
    config = require_federated_method(load_config(config_path, overrides))
    run = RunFolder(config.output.root, config.output.name, prefix="federated")
    if (run.path / CHECKPOINT).is_file():
        raise ValueError(f"{run.path} already holds a run: continue it with --resume {run.path}")
    return config, run


@contextmanager
def isolated_flower(run_dir: Path) -> Iterator[Path]:
    """Point Flower and Ray at ``run_dir`` for the duration; yields Ray's temp dir."""
    ray_dir, flwr_home = run_dir.resolve() / "ray", run_dir.resolve() / "flwr"
    for folder in (ray_dir, flwr_home):  # Flower creates its home only on first use
        folder.mkdir(parents=True, exist_ok=True)
    link_dir = None
    temp = ray_dir
    if len(str(ray_dir)) > MAX_RAY_TEMP:
        link_dir = Path(tempfile.mkdtemp(prefix="flr", dir="/tmp"))
        temp = link_dir / "r"
        temp.symlink_to(ray_dir)
    env = {
        "FLWR_HOME": str(flwr_home),
        "RAY_TMPDIR": str(temp),
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield temp
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if link_dir is not None:
            shutil.rmtree(link_dir)


def run_federation(
    config: Config, run: RunFolder, *, echo: Echo = print
) -> tuple[FederationResult, dict[str, Any]]:
    """Simulate ``config.federation.num_sites`` sites with ``run_simulation``; write ``run``."""
    fed = config.federation
    outcome: dict[str, Any] = {}
    with isolated_flower(run.path) as ray_temp:
        import ray
        from flwr.simulation import run_simulation

        from fedgray.fl.client_app import make_client_app
        from fedgray.fl.server_app import make_server_app

        cpus = os.cpu_count() or 1
        # progress comes from our own lines; Flower keeps its warnings (rejected updates).
        # open_clip's root-logger warnings install a root handler: stop duplicates there.
        flwr_log = logging.getLogger("flwr")
        level, propagate = flwr_log.level, flwr_log.propagate
        flwr_log.setLevel(logging.WARNING)
        flwr_log.propagate = False
        try:
            run_simulation(
                server_app=make_server_app(
                    config,
                    run_dir=run.path,
                    echo=echo,
                    on_result=lambda result, summary: outcome.update(r=result, s=summary),
                ),
                client_app=make_client_app(config, quiet=True),
                num_supernodes=fed.num_sites,
                backend_config={
                    "init_args": {
                        "num_cpus": cpus,
                        "num_gpus": 0,
                        "_temp_dir": str(ray_temp),
                        "logging_level": "ERROR",
                    },
                    "client_resources": {"num_cpus": cpus / fed.actors, "num_gpus": 0.0},
                },
            )
        finally:
            flwr_log.setLevel(level)
            flwr_log.propagate = propagate
            if ray.is_initialized():
                ray.shutdown()
    if "r" not in outcome:
        raise RuntimeError("the simulation ended without a result (see the log above)")
    return outcome["r"], outcome["s"]
