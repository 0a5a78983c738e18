"""predict and evaluate on CraFT models (forward queries only), federated and alone.

A CraFT model scores as it was trained: its learnt context prompt before every class
prompt, the refinement MLP over the backbone's class logits. So evaluate must give the
run's own final figures on the run's own images, and predict the same right answers; what
a CraFT model cannot do (rank captions, score classes its MLP was not trained on) is
refused with one line, before anything is written.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from fedgray.cli import main
from tests.helpers import micro_config, run_local
from tests.use.folders import write_folder_split

pytestmark = pytest.mark.slow  # a federated CraFT run (about 10 s of CPU) serves the module

CRAFT = [
    "method.name=craft",
    "train.task=classification",
    "method.craft.queries=20",
    "method.craft.popsize=4",
    "method.craft.intrinsic_dim=8",
    "method.craft.hidden=16",
    "method.craft.sigma=0.2",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """world/sketch as PNG folders: 90 training and 40 test images with labels, and the
    training folder again as the validation split: a folder's classes are those its split
    names, and federated CraFT sizes its refiner by the validation split's, which must be
    the sites' (this module checks the model's scores, not the split protocol)."""
    root = tmp_path_factory.mktemp("craft-data")
    write_folder_split(root, "train", 90)
    write_folder_split(root, "test", 40)
    shutil.copytree(root / "train", root / "validation")
    return root


@pytest.fixture(scope="module")
def federated(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-site, 2-round federated CraFT run on the folder."""
    root = tmp_path_factory.mktemp("craft-run")
    run_local(micro_config(root, f"data.dataset=folder:{data}", *CRAFT))
    return root / "run"


def evaluation(argv: list[str], out: Path) -> dict[str, float]:
    assert main(["evaluate", *argv, "--out", str(out), "--quiet"]) == 0
    metrics: dict[str, float] = json.loads((out / "evaluation.json").read_text())["metrics"]
    return metrics


def right_predictions(source: Path, images: Path, out: Path) -> int:
    assert main(["predict", str(source), str(images), "--out", str(out), "--quiet"]) == 0
    labels = {r["file"]: r["label"] for r in csv.DictReader((images / "captions.csv").open())}
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == len(labels)
    return sum(row["prediction"] == labels[row["file"]] for row in rows)


def test_a_federated_craft_model_scores_as_the_run_did(
    federated: Path, data: Path, tmp_path: Path
) -> None:
    final = json.loads((federated / "summary.json").read_text())["final"]  # the test split's
    own = evaluation([str(federated)], tmp_path / "own")
    assert set(own) == {"accuracy", "prompt_accuracy"}
    assert own == {key: final[key] for key in own}
    assert evaluation([str(federated), str(data / "test")], tmp_path / "folder") == own
    per_class = list(csv.DictReader((tmp_path / "folder" / "per_class.csv").open()))
    assert sum(int(row["support"]) for row in per_class) == 40
    hits = right_predictions(federated, data / "test", tmp_path / "predicted")
    assert hits == round(own["accuracy"] * 40 / 100)


def test_a_craft_model_of_fedgray_adapt_scores_as_the_run_did(data: Path, tmp_path: Path) -> None:
    options = [
        "backbone.name=fedgray-micro",
        "backbone.pretrained=null",
        "backbone.level=black",
        f"data.dataset=folder:{data}",
        "data.train_size=90",
        "data.validation_size=90",
        "data.test_size=40",
        f"output.root={tmp_path}",
        "output.name=alone",
        *CRAFT,
    ]
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  batch_size: 8\n")
    assert main(["adapt", str(config), *(a for o in options for a in ("--set", o)), "--quiet"]) == 0
    run = tmp_path / "alone"
    adapted = json.loads((run / "summary.json").read_text())["adapted"]
    own = evaluation([str(run)], tmp_path / "own")
    returned = {key: adapted[key] for key in ("accuracy", "prompt_accuracy")}
    assert own == returned  # the generation CraFT returned (the last one's are beside them)
    hits = right_predictions(run, data / "test", tmp_path / "predicted")
    assert hits == round(own["accuracy"] * 40 / 100)


def test_what_a_craft_model_cannot_do_is_refused_in_one_line(
    federated: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captions, two = tmp_path / "captions.txt", tmp_path / "two.txt"
    captions.write_text("a red circle\n")
    two.write_text("circle\nsquare\n")
    for extra, said in (
        (["--captions", str(captions)], "--captions: a CraFT model classifies only"),
        (["--classes", str(two)], "--classes: 2 class names; this CraFT model's"),
    ):
        capsys.readouterr()
        argv = ["predict", str(federated), str(data / "test"), *extra, "--quiet"]
        assert main([*argv, "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err
        assert not (tmp_path / "never").exists()
