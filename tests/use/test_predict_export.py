"""predict, evaluate and export end to end on a micro federation trained on a folder of PNGs.

The run, ``fedgray evaluate`` and ``fedgray predict`` must agree exactly on the same images;
a bundle must refuse every alteration and any backbone other than the one it was made for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedgray.cli import main
from fedgray.owner.keys import KeyFiles, generate_keys
from fedgray.runs import load_adapters, save_adapters
from tests.helpers import micro_config, run_local
from tests.use.folders import write_folder_split

pytestmark = pytest.mark.slow  # one micro federation (about 20 s) serves the whole module

COMPARED = ("i2t_r1", "t2i_r1", "r1_mean", "accuracy")


def seal_micro(keys: KeyFiles, out: Path, *, seed: int) -> Path:
    argv = ["seal", "--name", "fedgray-micro", "--pretrained", "none", "--quiet"]
    argv += ["--set", f"pretrain.seed={seed}", "--level", "gray"]
    argv += ["--signing-key", str(keys.signing_key), "--content-key", str(keys.content_key)]
    assert main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-site, 2-round classification run of the micro CLIP, sealed, on a PNG folder."""
    root = tmp_path_factory.mktemp("use")
    for split, size in (("train", 90), ("validation", 40), ("test", 40)):
        write_folder_split(root / "data", split, size)
    owner = generate_keys(root / "owner")
    artifact = seal_micro(owner, root / "micro.fgs", seed=0)
    config = micro_config(
        root,
        f"data.dataset=folder:{root / 'data'}",
        "train.task=classification",
        f"backbone.artifact={artifact}",
        f"backbone.verify_key={owner.verify_key}",
        f"backbone.content_key={owner.content_key}",
    )
    run_local(config)
    exporter = generate_keys(root / "exporter")
    return {
        "root": root,
        "run": root / "run",
        "test": root / "data" / "test",
        "signing": exporter.signing_key,
        "verify": exporter.verify_key,
        "owner_verify": owner.verify_key,
        "owner_content": owner.content_key,
        "owner_signing": owner.signing_key,
    }


def only(folder: Path, prefix: str) -> Path:
    (found,) = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    return found


def evaluation(argv: list[str], out: Path) -> dict[str, float]:
    assert main(["evaluate", *argv, "--out", str(out)]) == 0
    return json.loads((out / "evaluation.json").read_text())["metrics"]


def test_evaluate_and_predict_equal_the_runs_own_final_evaluation(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    run = trained["run"]
    final = json.loads((run / "summary.json").read_text())["final"]
    on_run_data = evaluation([str(run)], tmp_path / "own")
    on_folder = evaluation([str(run), str(trained["test"])], tmp_path / "folder")
    assert {k: on_run_data[k] for k in COMPARED} == {k: final[k] for k in COMPARED}
    assert on_folder == on_run_data
    per_class = list(csv.DictReader((tmp_path / "folder" / "per_class.csv").open()))
    assert sum(int(row["support"]) for row in per_class) == 40
    assert (tmp_path / "folder" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["predict", str(run), str(trained["test"]), "--quiet"]) == 0
    predicted = only(run, "predict-")
    rows = list(csv.DictReader((predicted / "predictions.csv").open()))
    labels = {
        r["file"]: r["label"] for r in csv.DictReader((trained["test"] / "captions.csv").open())
    }
    hits = sum(row["prediction"] == labels[row["file"]] for row in rows)
    assert len(rows) == 40 and hits == round(final["accuracy"] * 40 / 100)  # the same images right
    lines = [json.loads(line) for line in (predicted / "predictions.jsonl").open()]
    assert [line["prediction"] for line in lines] == [row["prediction"] for row in rows]
    assert all(sum(line["scores"].values()) == pytest.approx(1.0) for line in lines)


def test_evaluate_on_captions_without_labels_reports_recall_only(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    rows = list(csv.DictReader((trained["test"] / "captions.csv").open()))
    with (unlabelled / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        for row in rows:
            (unlabelled / row["file"]).write_bytes((trained["test"] / row["file"]).read_bytes())
            writer.writerow([row["file"], row["caption"]])
    metrics = evaluation([str(trained["run"]), str(unlabelled)], tmp_path / "out")
    final = json.loads((trained["run"] / "summary.json").read_text())["final"]
    assert "accuracy" not in metrics and metrics["r1_mean"] == final["r1_mean"]
    assert not (tmp_path / "out" / "confusion.png").exists()


def test_evaluate_through_the_isolated_runtime_matches_in_process(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    final = json.loads((trained["run"] / "summary.json").read_text())["final"]
    isolated = [str(trained["run"]), "--set", "backbone.isolated=true"]
    metrics = evaluation(isolated, tmp_path / "isolated")
    assert {k: metrics[k] for k in COMPARED} == pytest.approx(
        {k: final[k] for k in COMPARED}, abs=1e-4
    )


def test_predict_ranks_images_for_captions_and_captions_for_images(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    images = tmp_path / "plain"
    images.mkdir()
    for png in sorted(trained["test"].glob("*.png"))[:6]:
        (images / png.name).write_bytes(png.read_bytes())
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n\na blue square\n")
    out = tmp_path / "ranked"
    argv = [str(trained["run"]), str(images), "--captions", str(captions), "--top", "4"]
    assert main(["predict", *argv, "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "rankings.csv").open()))
    assert [(r["caption"], r["rank"]) for r in rows[:4]] == [
        ("a red circle", str(k)) for k in (1, 2, 3, 4)
    ]
    lines = [json.loads(line) for line in (out / "rankings.jsonl").open()]
    assert len(lines) == 2 + 6  # per caption, then per image
    cosines = [entry["cosine"] for entry in lines[0]["images"]]
    assert cosines == sorted(cosines, reverse=True) and len(cosines) == 4
    assert {len(line["captions"]) for line in lines[2:]} == {2}


def test_a_bundle_loads_verified_and_every_alteration_is_refused(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "micro.bundle"
    assert (
        main(
            [
                "export",
                str(trained["run"]),
                "--signing-key",
                str(trained["signing"]),
                "--out",
                str(bundle),
            ]
        )
        == 0
    )
    card = (bundle / "MODEL_CARD.md").read_text()
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["backbone"]["weights_sha256"] in card
    assert manifest["data"]["dataset"].startswith("folder:")
    final = json.loads((trained["run"] / "summary.json").read_text())["final"]
    verify = ["--verify-key", str(trained["verify"])]
    assert (
        evaluation([str(bundle), *verify], tmp_path / "from-bundle")["accuracy"]
        == final["accuracy"]
    )

    def refused(source: Path, *extra: str) -> str:
        capsys.readouterr()
        assert main(["evaluate", str(source), *extra, "--out", str(tmp_path / "never")]) == 2
        assert not (tmp_path / "never").exists()
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    before = {f.name: f.read_bytes() for f in bundle.iterdir()}
    again = ["export", str(trained["run"]), "--signing-key", str(trained["signing"])]
    assert main([*again, "--out", str(bundle)]) == 2
    assert "exists; refusing to overwrite it" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in bundle.iterdir()} == before
    assert "give --verify-key" in refused(bundle)
    assert "signature does not verify" in refused(
        bundle, "--verify-key", str(trained["owner_verify"])
    )

    forged = tmp_path / "forged.bundle"  # an attacker raises the reported accuracy
    forged.mkdir()
    for file in bundle.iterdir():
        (forged / file.name).write_bytes(file.read_bytes())
    text = (forged / "bundle.json").read_text()
    (forged / "bundle.json").write_text(text.replace('"accuracy": ', '"accuracy": 9', 1))
    assert "signature does not verify" in refused(forged, *verify)

    swapped = tmp_path / "swapped.bundle"  # the signed manifest, other adapters
    swapped.mkdir()
    for file in bundle.iterdir():
        (swapped / file.name).write_bytes(file.read_bytes())
    state, meta = load_adapters(bundle / "adapters.pt", backbone="fedgray-micro")
    poisoned = {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}
    save_adapters(swapped / "adapters.pt", poisoned, **meta)
    assert "does not match the signed hash" in refused(swapped, *verify)


def test_a_bundle_or_run_for_another_backbone_or_method_is_refused(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "micro.bundle"
    assert (
        main(
            [
                "export",
                str(trained["run"]),
                "--signing-key",
                str(trained["signing"]),
                "--out",
                str(bundle),
            ]
        )
        == 0
    )
    owner = KeyFiles(trained["owner_signing"], trained["owner_verify"], trained["owner_content"])
    other = seal_micro(owner, tmp_path / "other.fgs", seed=1)  # same architecture, other weights
    capsys.readouterr()
    argv = [
        "evaluate",
        str(bundle),
        "--verify-key",
        str(trained["verify"]),
        "--set",
        f"backbone.artifact={other}",
    ]
    assert main(argv) == 2
    assert "made for backbone weights_sha256" in capsys.readouterr().err

    assert (
        main(
            [
                "evaluate",
                str(bundle),
                "--verify-key",
                str(trained["verify"]),
                "--set",
                "backbone.name=fedgray-tiny",
            ]
        )
        == 2
    )
    assert "backbone.name: not a site setting" in capsys.readouterr().err

    copied = tmp_path / "run-copy"  # a run folder whose adapters another method trained
    copied.mkdir()
    for file in ("config.yaml", "summary.json", "metrics.jsonl"):
        (copied / file).write_bytes((trained["run"] / file).read_bytes())
    state, meta = load_adapters(trained["run"] / "adapters.pt", backbone="fedgray-micro")
    save_adapters(copied / "adapters.pt", state, **{**meta, "method": "lga"})
    assert main(["evaluate", str(copied)]) == 2
    assert "trained by method 'lga', not 'dga'" in capsys.readouterr().err
    assert [p.name for p in copied.iterdir() if p.name.startswith("evaluate-")] == []


def test_a_sites_personal_adapters_go_over_the_global_ones_and_into_its_bundle(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedgray.fl.clientapp.state import load_personal
    from fedgray.fl.common.cache import shared_backbone
    from fedgray.materials import load_task_data
    from fedgray.tasks import evaluate
    from fedgray.train.gradient import adapted_model

    config = micro_config(tmp_path, "federation.personal=[image_out]")
    run_local(config)
    run, site = tmp_path / "run", tmp_path / "run" / "sites" / "site-1"
    own = evaluation([str(run), "--personal", str(site)], tmp_path / "own")
    shared, _ = load_adapters(run / "adapters.pt", backbone="fedgray-micro")
    personal = load_personal(site, upto=2)
    assert personal and all(key.startswith("image_out") for key in personal)
    backbone = shared_backbone(config)
    test = load_task_data(config.data, backbone, split="test")
    assert own == evaluate(adapted_model(config.method, backbone, {**shared, **personal}), test)
    assert evaluation([str(run)], tmp_path / "global") == evaluate(
        adapted_model(config.method, backbone, shared), test
    )

    bundle = tmp_path / "site-1.bundle"
    export = ["export", str(run), "--signing-key", str(trained["signing"]), "--out", str(bundle)]
    assert main([*export, "--personal", str(site)]) == 0
    verify = ["--verify-key", str(trained["verify"])]
    assert evaluation([str(bundle), *verify], tmp_path / "bundled") == own
    (bundle / "personal.pt").write_bytes((site / "personal-1.pt").read_bytes())  # another round
    capsys.readouterr()
    assert main(["evaluate", str(bundle), *verify]) == 2
    assert "personal.pt does not match the signed hash" in capsys.readouterr().err

    # Its personal adapters alone: paired with these global adapters (the run or a bundle of
    # them) they give its own figures; alone, or over other global adapters, refused.
    alone, plain = tmp_path / "site-1.personal", tmp_path / "global.bundle"
    only_own = ["--personal", str(site), "--personal-only", "--out", str(alone)]
    assert main(["export", str(run), "--signing-key", str(trained["signing"]), *only_own]) == 0
    assert sorted(p.name for p in alone.iterdir()) == [
        "MODEL_CARD.md", "bundle.json", "bundle.sig", "personal.pt"
    ]  # fmt: skip
    assert "personal adapters only" in (alone / "MODEL_CARD.md").read_text()
    assert evaluation([str(run), "--personal", str(alone), *verify], tmp_path / "paired") == own
    assert main([*export[:-2], "--out", str(plain)]) == 0
    on_bundle = [str(plain), *verify, "--personal", str(alone)]
    assert evaluation(on_bundle, tmp_path / "paired-bundle") == own
    for source, said in (
        ([str(alone), *verify], "holds a site's personal adapters only"),
        ([str(trained["run"]), "--personal", str(alone), *verify], "go over the global adapters"),
    ):
        capsys.readouterr()
        assert main(["evaluate", *source, "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err
        assert not (tmp_path / "never").exists()
