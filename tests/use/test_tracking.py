"""Tracking sinks: the run's own metrics, read back with TensorBoard's and MLflow's readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgray import tracking
from fedgray.cli import main
from fedgray.config_schema import ConfigError
from fedgray.resolver import load_config

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.mark.slow  # MLflow creates its SQLite schema through some fifty migrations
def test_adapt_metrics_reach_tensorboard_and_mlflow_as_logged(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    micro = ["--set", "backbone.name=fedgray-micro", "--set", "backbone.pretrained=null",
             "--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "train.batch_size=8",
             "--set", "data.train_size=40", "--set", "data.test_size=20",
             "--set", f"output.root={tmp_path}", "--set", "output.name=tracked",
             "--quiet"]  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("output:\n  track: [tensorboard, mlflow]\n")
    assert main(["adapt", str(config), *micro]) == 0
    run = tmp_path / "tracked"
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    logged = [(r["step"], r["r1_mean"]) for r in records]
    assert len(logged) == 3  # zero-shot, step 2, step 4

    events = EventAccumulator(str(run / tracking.TENSORBOARD_DIR))
    events.Reload()
    scalars = [(e.step, e.value) for e in events.Scalars("r1_mean")]
    assert [s for s, _ in scalars] == [s for s, _ in logged]
    assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)

    client = MlflowClient(tracking_uri=tracking.mlflow_uri(run))
    (experiment,) = [e for e in client.search_experiments() if e.name == "fedgray"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    history = sorted(
        (m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "r1_mean")
    )
    assert history == logged
    assert mlrun.data.params["train.steps"] == "4"
    assert mlrun.info.status == "FINISHED"


def test_a_sink_without_its_library_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(tracking.TRACKERS, "mlflow", ("fedgray_no_such_module", lambda *_: None))
    with pytest.raises(ConfigError, match=r"^output.track: 'mlflow' needs the fedgray_no_such"):
        load_config(None, ["output.track=[mlflow]"])
    with pytest.raises(ConfigError, match="unknown tracking sink 'wandb'"):
        load_config(None, ["output.track=[wandb]"])
