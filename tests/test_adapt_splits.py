"""``fedgray adapt`` reads the test split once, after training: every logged figure (the
learning curve, the progress lines) is the validation split's, and the reported figures
are the returned and the initial adapters scored on test at the end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from fedgray import adapt as adapt_module
from fedgray.adapt import adapt
from fedgray.blackbox import trainer as craft_trainer
from fedgray.resolver import load_config
from fedgray.runs import load_adapters
from fedgray.tasks import TaskData, evaluate
from fedgray.train import gradient
from fedgray.train.gradient import adapted_model
from tests.helpers import MICRO, SHORT_CRAFT_ON_DIGITS


class SplitSpy:
    """Which split each scoring reads: the data ``fedgray adapt`` loads, by identity, and
    every :func:`fedgray.tasks.evaluate` (or CraFT feature encoding) of it, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loaded: dict[int, str] = {}
        self.scored: list[str] = []
        load = adapt_module.load_task_data

        def loading(section: Any, backbone: Any, *, split: str) -> TaskData:
            data = load(section, backbone, split=split)
            self.loaded[id(data)] = split
            self.loaded[id(data.images)] = split
            return data

        def scoring(model: Any, data: TaskData) -> dict[str, float]:
            self.scored.append(self.loaded.get(id(data), "other"))
            return evaluate(model, data)

        encode = craft_trainer.encode_images

        def encoding(model: Any, images: torch.Tensor) -> torch.Tensor:
            self.scored.append(self.loaded.get(id(images), "other"))
            return encode(model, images)

        monkeypatch.setattr(adapt_module, "load_task_data", loading)
        monkeypatch.setattr(adapt_module, "evaluate", scoring)
        monkeypatch.setattr(gradient, "evaluate", scoring)
        monkeypatch.setattr(craft_trainer, "encode_images", encoding)


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_adapt_draws_its_curve_on_validation_and_reads_test_once_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SplitSpy(monkeypatch)
    lines: list[str] = []
    config = load_config(
        None,
        [
            *MICRO,
            "train.steps=4",
            "train.eval_every=2",
            f"output.root={tmp_path}",
            "output.name=run",
        ],
    )
    result = adapt(config, progress=False, echo=lines.append)
    # zero-shot and two evaluations on validation, then test twice (returned, initial)
    assert spy.scored == ["validation"] * 3 + ["test"] * 2
    run = tmp_path / "run"
    records, summary = _records(run), json.loads((run / "summary.json").read_text())
    assert [r["step"] for r in records] == [0, 2, 4]
    assert summary["curve_on"] == "the validation split"
    assert summary["evaluated_on"] == "the test split, read once after training"
    assert summary["validation"]["adapted"]["r1_mean"] == records[-1]["r1_mean"]
    assert summary["validation"]["zero_shot"]["r1_mean"] == records[0]["r1_mean"]
    assert all(line.startswith("step") and "validation r1_mean" in line for line in lines[1:])
    # The reported figures are what anyone gets scoring the run's adapters.pt on test.
    adapt_module.seed_everything(config.train)  # the micro backbone's random weights, as adapt's
    backbone = adapt_module.open_backbone(config, progress=False)
    state, _ = load_adapters(run / "adapters.pt", backbone="fedgray-micro")
    test = adapt_module.load_task_data(config.data, backbone, split="test")
    validation = adapt_module.load_task_data(config.data, backbone, split="validation")
    trained = adapted_model(config.method, backbone, state)
    assert summary["adapted"] == result.adapted == evaluate(trained, test)
    assert records[-1]["r1_mean"] == evaluate(trained, validation)["r1_mean"]
    assert summary["zero_shot"] == result.zero_shot
    assert summary["zero_shot"]["r1_mean"] != records[0]["r1_mean"]  # two different splits


def test_craft_scores_validation_while_it_runs_and_test_once_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SplitSpy(monkeypatch)
    config = load_config(
        None,
        [
            *SHORT_CRAFT_ON_DIGITS,
            f"output.root={tmp_path}",
            "output.name=run",
        ],
    )
    result = adapt(config, progress=False, echo=lambda _: None)
    # The zero-shot record, the validation features CraFT's curve reuses, then the test
    # features once (returned and last generation) and the initial adapters' test score.
    assert Counter(spy.scored)["test"] == 2 and spy.scored[-2:] == ["test", "test"]
    assert spy.scored[:2] == ["validation", "validation"]
    assert set(result.adapted) == {
        "accuracy",
        "prompt_accuracy",
        "last_accuracy",
        "last_prompt_accuracy",
    }
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (
        summary["validation"]["adapted"]["accuracy"] == _records(tmp_path / "run")[-1]["accuracy"]
    )
