"""Tracking sinks (``output.track``): a run's metrics in TensorBoard and MLflow, offline.

Each sink writes inside the run folder only: TensorBoard event files under ``tensorboard/``,
an MLflow SQLite store ``mlflow.db`` (the MLflow file store is in maintenance mode) with
its artifact root ``mlartifacts/``. They are written from the run's ``metrics.jsonl`` when
the run ends, so they hold exactly the figures the run logged, and a resumed run rewrites
them whole instead of appending a second copy. Both libraries are optional extras
(``pip install -c constraints.txt -e ".[track]"``), imported only when a sink writes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from fedgray.config_schema import ConfigError

TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS = "tensorboard", "mlflow.db", "mlartifacts"
STEP_KEYS = ("round", "step")  # what a record counts by: federated rounds, adapt's steps

Points = list[tuple[int, dict[str, float]]]


def flat_metrics(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves of a metrics record as dotted names (``validation.r1_mean``)."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_metrics(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value) and key not in STEP_KEYS:
                yield name, float(value)


def points(records: list[dict[str, Any]]) -> Points:
    """``(step, metrics)`` per record; the step is the round or adapt's step."""
    out = []
    for index, record in enumerate(records):
        step = next((int(record[k]) for k in STEP_KEYS if k in record), index)
        out.append((step, dict(flat_metrics(record))))
    return out


def _tensorboard(run_dir: Path, series: Points, params: dict[str, str]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    folder = run_dir / TENSORBOARD_DIR
    shutil.rmtree(folder, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for step, metrics in series:
            for name, value in metrics.items():
                writer.add_scalar(name, value, step)
        writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))
    finally:
        writer.close()


def mlflow_uri(run_dir: Path) -> str:
    """The tracking URI of a run folder's MLflow store."""
    return f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"


def _mlflow(run_dir: Path, series: Points, params: dict[str, str]) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    (run_dir / MLFLOW_DB).unlink(missing_ok=True)
    shutil.rmtree(run_dir / MLFLOW_ARTIFACTS, ignore_errors=True)
    client = MlflowClient(tracking_uri=mlflow_uri(run_dir))
    experiment = client.create_experiment(
        "fedgray", artifact_location=(run_dir / MLFLOW_ARTIFACTS).resolve().as_uri()
    )
    run = client.create_run(experiment, run_name=run_dir.name)
    metrics = [
        Metric(name, value, 0, step) for step, values in series for name, value in values.items()
    ]
    for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    client.set_terminated(run.info.run_id)


# name -> (the module it needs, the writer)
TRACKERS: dict[str, tuple[str, Callable[[Path, Points, dict[str, str]], None]]] = {
    "tensorboard": ("tensorboard", _tensorboard),
    "mlflow": ("mlflow", _mlflow),
}


def check_installed(names: list[str]) -> None:
    """Refuse, in one line, a sink whose library is not installed (before a run starts)."""
    for name in names:
        module = TRACKERS[name][0]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"output.track: '{name}' needs the {module} package: "
                'pip install -c constraints.txt -e ".[track]"'
            )


def _params(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from _params(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", json.dumps(value)


def write_tracking(run_dir: Path, names: list[str], records: list[dict[str, Any]]) -> None:
    """Write ``records`` (the run's metrics) and its config to each sink in ``names``."""
    if not names:
        return
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    params = dict(_params(config))
    series = points(records)
    for name in names:
        TRACKERS[name][1](run_dir, series, params)
