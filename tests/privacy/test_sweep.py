"""The privacy-utility sweep on the micro setting: CSV rows, achieved epsilon, plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fedgray.cli import main
from tests.helpers import MICRO

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


@pytest.mark.slow
def test_sweep_writes_rows_within_target_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--rounds", "2", "--quiet"]
    args += ["--seeds", "1"]
    assert main([*args, *(f"--set={o}" for o in MICRO)]) == 0
    (folder,) = tmp_path.glob("sweep-*")
    with (folder / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["target_epsilon"]) for r in rows] == [math.inf, 8, 4, 2, 1]
    private = rows[1:]
    for row in private:
        assert 0 < float(row["achieved_max_epsilon"]) <= float(row["target_epsilon"])
        assert int(row["steps"]) == 2 * 2  # 2 rounds x 2 local steps, every site trained
        assert row["accountant"] == "rdp" and float(row["delta"]) == 1e-5
    sigmas = [float(r["noise_multiplier"]) for r in private]
    assert sigmas == sorted(sigmas) and len(set(sigmas)) == 4  # less noise for a larger epsilon
    assert rows[0]["achieved_max_epsilon"] == "inf" and rows[0]["noise_multiplier"] == ""
    assert len({r["zero_shot_r1_mean"] for r in rows}) == 1
    for row in rows:
        records = (folder / row["run"] / "metrics.jsonl").read_text().splitlines()
        assert json.loads(records[-1])["round"] == 2
    assert (folder / "privacy_utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "sweep.json").read_text())["delta"] == 1e-5
    out = capsys.readouterr().out
    assert "zero-shot r1_mean" in out and f"sweep folder: {folder}" in out
    assert "[5/5] target epsilon 1, seed 0" in out and "round 1/2" not in out  # --quiet


@pytest.mark.parametrize("size", [7, 13, 40])
def test_site_size_sets_each_sites_training_examples(size: int) -> None:
    from fedgray.fl.common.partitions import partition_indices
    from fedgray.resolver import load_config
    from fedgray.sweep_point import Point

    base = load_config(QUICKSTART, MICRO)
    fed = base.federation
    point = Point(8.0, 0, size)
    config = load_config(
        QUICKSTART, [*MICRO, *point.data_overrides(num_sites=fed.num_sites, holdout=fed.holdout)]
    )
    for i in range(fed.num_sites):
        share = partition_indices(config, partition_id=i, num_partitions=fed.num_sites)
        assert len(share.train) == size and len(share.heldout) >= 1
    assert (
        point.name == f"n{size}-eps8-seed0"
        and Point(8.0, 0).data_overrides(num_sites=3, holdout=0.2) == []
    )


def test_gain_kept_is_relative_to_the_non_private_run_of_the_same_size_and_seed() -> None:
    from fedgray.sweep import with_gains

    def row(size: int, seed: int, eps: float, value: float) -> dict[str, object]:
        return {"metric": "accuracy", "site_size": size, "seed": seed, "target_epsilon": eps,
                "accuracy": value, "zero_shot_accuracy": 20.0}  # fmt: skip

    rows = with_gains(
        [row(200, 0, math.inf, 60.0), row(200, 0, 8, 50.0), row(200, 0, 1, 10.0),
         row(1000, 0, math.inf, 80.0), row(1000, 0, 8, 74.0), row(1000, 1, 8, 70.0)]
    )  # fmt: skip
    assert [r["gain_kept"] for r in rows] == [1.0, 0.75, -0.25, 1.0, 0.9, None]


@pytest.mark.slow
def test_sweep_over_site_sizes_writes_gains_and_their_plot(tmp_path: Path) -> None:
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--rounds", "1", "--quiet"]
    args += ["--epsilons", "8,inf", "--site-sizes", "10,20", "--seeds", "1"]
    assert main([*args, *(f"--set={o}" for o in MICRO)]) == 0
    (folder,) = tmp_path.glob("sweep-*")
    with (folder / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["site_size"], r["target_epsilon"]) for r in rows] == [
        ("10", "inf"), ("10", "8.0"), ("20", "inf"), ("20", "8.0")
    ]  # fmt: skip
    for row in rows:
        private, reference = (
            row,
            next(
                r
                for r in rows
                if r["site_size"] == row["site_size"] and r["target_epsilon"] == "inf"
            ),
        )
        zero = float(private["zero_shot_r1_mean"])
        expected = (float(private["r1_mean"]) - zero) / (float(reference["r1_mean"]) - zero)
        assert float(private["gain_kept"]) == pytest.approx(expected, abs=1e-4)
    assert (folder / "gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _reference(tmp_path: Path, **changes: str) -> Path:
    """The quickstart with ``changes`` (``section.key`` -> value) as a reference config."""
    import yaml

    config = yaml.safe_load(QUICKSTART.read_text())
    for name, value in changes.items():
        section, key = name.split(".")
        config[section][key] = yaml.safe_load(value)
    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_reference_config_runs_the_non_private_points_and_sets_the_gain(tmp_path: Path) -> None:
    import yaml

    reference = _reference(tmp_path, **{"train.lr": "0.01"})
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--rounds", "1", "--quiet"]
    args += ["--epsilons", "8,inf", "--reference", str(reference), "--seeds", "1"]
    assert main([*args, *(f"--set={o}" for o in MICRO)]) == 0
    (folder,) = tmp_path.glob("sweep-*")
    with (folder / "sweep.csv").open() as handle:
        base, private = list(csv.DictReader(handle))
    assert (base["config"], private["config"]) == (str(reference), str(QUICKSTART))
    rates = [
        yaml.safe_load((folder / row["run"] / "config.yaml").read_text())["train"]["lr"]
        for row in (base, private)
    ]
    assert rates == [0.01, 0.003]
    assert base["achieved_max_epsilon"] == "inf" and float(private["achieved_max_epsilon"]) <= 8
    zero = float(private["zero_shot_r1_mean"])
    expected = (float(private["r1_mean"]) - zero) / (float(base["r1_mean"]) - zero)
    assert float(private["gain_kept"]) == pytest.approx(expected, abs=1e-4)
    assert json.loads((folder / "sweep.json").read_text())["reference"] == str(reference)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"data.test_size": "41"}, "data.test_size"), ({"federation.num_sites": "4"},
     "federation.num_sites"), ({"data.dataset": "world/photo"}, "data.dataset")],
)  # fmt: skip
def test_reference_on_other_data_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], field: str
) -> None:
    sets = [o for o in MICRO if not o.startswith(tuple(change))]  # the change must survive
    reference = _reference(tmp_path, **change)
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--reference", str(reference), *(f"--set={o}" for o in sets)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fedgray: error: --reference: {field} is")
    assert not (tmp_path / "out").exists()


def test_reference_may_differ_in_training_size_only_when_the_sweep_sets_it() -> None:
    from fedgray.resolver import load_config
    from fedgray.sweep import check_reference

    swept = load_config(QUICKSTART, MICRO)
    other = load_config(QUICKSTART, [*MICRO, "data.train_size=120", "method.name=output"])
    check_reference(swept, other, site_sizes=True)
    with pytest.raises(ValueError, match=r"^--reference: data\.train_size is 120 there and 90"):
        check_reference(swept, other, site_sizes=False)


def test_reference_without_a_non_private_point_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path / "out"), "--epsilons", "8,1"]
    assert main([*args, "--reference", str(QUICKSTART), *(f"--set={o}" for o in MICRO)]) != 0
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("fedgray: error: --reference: needs inf among --epsilons")
    assert not (tmp_path / "out").exists()


def test_a_site_size_the_data_cannot_hold_is_refused_before_any_point_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The digits' training pool holds under 900 scans: 3 sites of 1,000 do not fit, and the
    sweep says so in one line before its first (fitting) size runs."""
    sets = [*MICRO, "data.dataset=digits", "train.task=classification"]
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path / "out"), "--epsilons", "8"]
    args += ["--seeds", "1", "--site-sizes", "20,1000", *(f"--set={o}" for o in sets)]
    assert main(args) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("fedgray: error: --site-sizes 1000: data.train_size: digits has ")
    assert err.endswith("train samples, 3750 requested")
    assert not (tmp_path / "out").exists()
