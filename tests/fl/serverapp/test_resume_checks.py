"""Resume accepts only what it can honour, changes nothing when it refuses, and keeps a
privacy target over the whole run when rounds are added."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant

from fedgray.config_schema import ConfigError
from fedgray.fl.clientapp.state import load_personal
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.checkpoint import CHECKPOINT, load_checkpoint
from fedgray.fl.simulation.engine import open_run
from tests.helpers import MICRO, micro_config, refused, run_local


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-round DGA run of the micro federation."""
    root = tmp_path_factory.mktemp("resume")
    run_local(micro_config(root))
    return root / "run"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("method.name=output", "method.name"),
        ("federation.num_sites=4", "federation.num_sites"),
        ("data.dataset=world/inverted", "data.dataset"),
        ("federation.strategy=fedprox", "federation.strategy"),
        ("federation.partitioner=dirichlet", "federation.partitioner"),
        ("train.task=classification", "train.task"),
        ("pretrain.seed=5", "pretrain.seed"),  # seeds the random backbone's weights
    ],
)
def test_a_refused_resume_names_the_field_and_changes_no_byte(
    finished: Path, override: str, field: str
) -> None:
    before = _checksums(finished)
    with pytest.raises(ConfigError, match=rf"^{field}: cannot change on resume \(the run has "):
        open_run(None, ["federation.num_rounds=3", override], resume=finished)
    assert _checksums(finished) == before
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=finished)  # still resumable
    assert config.federation.num_rounds == 3
    assert _checksums(finished) == before  # accepting writes nothing either


def test_a_corrupt_or_truncated_checkpoint_is_one_line(finished: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in finished.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = (copy / CHECKPOINT).read_bytes()
    for broken in (data[: len(data) // 2], b"garbage" * 10):
        (copy / CHECKPOINT).write_bytes(broken)
        before = _checksums(copy)
        with pytest.raises(ValueError, match=r"checkpoint\.pt: unreadable, truncated or corrupt"):
            open_run(None, ["federation.num_rounds=3"], resume=copy)
        assert _checksums(copy) == before


def _replayed_epsilon(history: list[list[float]], delta: float) -> float:
    accountant = RDPAccountant()  # Opacus' own, stepped one step at a time
    for sigma, rate, steps in history:
        for _ in range(int(steps)):
            accountant.step(noise_multiplier=sigma, sample_rate=rate)
    return accountant.get_epsilon(delta=delta)


PRIVATE = ["privacy.enabled=true", "privacy.target_epsilon=4", "federation.local_steps=3"]


@pytest.mark.slow  # a DP federation, resumed with rounds added
def test_rounds_added_on_resume_keep_the_target_epsilon(tmp_path: Path) -> None:
    run_local(micro_config(tmp_path, *PRIVATE))
    run_dir = tmp_path / "run"
    lines: list[str] = []
    config, _ = open_run(None, ["federation.num_rounds=4"], resume=run_dir, echo=lines.append)
    assert lines and lines[0].startswith("privacy: sites have spent up to epsilon 3.9")
    result, _, _ = run_local(config)
    ledgers = load_checkpoint(run_dir).privacy
    assert len(ledgers) == 3
    for site, entry in ledgers.items():
        steps = sum(int(s) for _, _, s in entry["history"])
        assert steps == 12  # 4 rounds x 3 local steps
        epsilon = _replayed_epsilon(entry["history"], 1e-5)
        assert epsilon <= 4.0, f"site {site}: epsilon {epsilon} above the target"
        assert epsilon == pytest.approx(entry["epsilon"], rel=1e-9)
        assert epsilon > 3.9  # the budget left was used, not wasted
    assert result.records[-1]["privacy"]["max_epsilon"] <= 4.0


def test_a_target_already_spent_is_refused_before_anything_changes(tmp_path: Path) -> None:
    run_local(micro_config(tmp_path, *PRIVATE))
    run_dir = tmp_path / "run"
    before = _checksums(run_dir)
    with pytest.raises(ConfigError, match=r"^privacy.target_epsilon: site \d has already spent"):
        open_run(None, ["federation.num_rounds=3", "privacy.target_epsilon=2"], resume=run_dir)
    assert _checksums(run_dir) == before


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["federation.num_sites=100"], "federation.num_sites: cannot split 90 samples into 100"),
        (["data.train_size=4"], "federation.num_sites: site 1 would hold 1 sample(s)"),
        (["data.dataset=digits", "data.train_size=5000"], "data.train_size: digits has 889"),
        (["data.dataset=folder:/nonexistent"], "data.dataset: no captions.csv in /nonexistent"),
        (
            ["data.dataset=fashion-mnist", "data.root=/nonexistent"],
            "data.dataset: 'fashion-mnist' needs train-images-idx3-ubyte.gz",
        ),
        (
            ["federation.select_on=validation", "data.dataset=digits", "data.validation_size=500"],
            "data.validation_size: digits has 100 validation samples, 500 requested",
        ),
    ],
)
def test_a_fresh_run_that_cannot_start_leaves_no_folder(
    tmp_path: Path, overrides: list[str], error: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    root = tmp_path / "runs"
    with pytest.raises(ConfigError, match=f"^{re.escape(error)}"):
        open_run(str(config), [*MICRO, f"output.root={root}", *overrides], resume=None)
    assert not root.exists()


PERSONAL = ["federation.personal=[image_out, text_out]", "federation.num_rounds=3"]


def test_personal_adapters_survive_a_resume(tmp_path: Path) -> None:
    full, _, _ = run_local(micro_config(tmp_path, *PERSONAL, name="full"))
    run_local(micro_config(tmp_path, *PERSONAL, "federation.num_rounds=2", name="cut"))
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "cut")
    resumed, _, grid = run_local(config)  # a fresh process: no context.state
    a, b = from_record(full.arrays), from_record(resumed.arrays)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith(("image_out", "text_out")) for k in a)  # never on the server
    for site in range(3):
        mine = load_personal(tmp_path / "full" / "sites" / f"site-{site}")
        theirs = load_personal(tmp_path / "cut" / "sites" / f"site-{site}")
        assert mine.keys() == theirs.keys() == {
            "image_out.weight", "image_out.bias", "text_out.weight", "text_out.bias"
        }  # fmt: skip
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert full.records[-1]["federated"] == pytest.approx(resumed.records[-1]["federated"])


NOISE = ["privacy.enabled=true", "privacy.noise_multiplier=1.0", "federation.local_steps=3"]


def test_any_spelling_of_the_run_folder_names_that_run(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "link").symlink_to(finished)
    before = _checksums(finished)
    for cwd, spelling in [
        (finished, "."),
        (finished, "./"),
        (tmp_path, f"{finished}/../{finished.name}"),
        (tmp_path, "link"),
        (tmp_path, "link/"),
        (tmp_path, f"{finished}/"),
    ]:
        monkeypatch.chdir(cwd)
        config, run = open_run(None, ["federation.num_rounds=3"], resume=Path(spelling))
        assert run.path == finished.resolve(), spelling
        assert (config.output.root, config.output.name) == (str(finished.parent), finished.name)
    assert _checksums(finished) == before
    assert {p.name for p in finished.iterdir()} == before.keys()  # no fresh run inside it


def test_resume_from_inside_the_run_continues_its_privacy_ledgers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_local(micro_config(tmp_path, *NOISE))  # rounds 1-2
    run_dir = tmp_path / "run"
    entries = sorted(p.name for p in run_dir.iterdir())
    monkeypatch.chdir(run_dir)  # cd RUN && fedgray run --resume .
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=Path("."))
    result, _, _ = run_local(config)
    assert sorted(p.name for p in run_dir.iterdir()) == entries  # no fresh run inside it
    assert [r["round"] for r in result.records] == [0, 1, 2, 3]
    ledgers = load_checkpoint(run_dir).privacy
    assert len(ledgers) == 3
    for site, entry in ledgers.items():  # round 3's steps added to rounds 1-2's, not alone
        assert sum(int(s) for _, _, s in entry["history"]) == 3 * 3, site
        assert _replayed_epsilon(entry["history"], 1e-5) == pytest.approx(entry["epsilon"])


def test_an_output_root_that_cannot_hold_a_run_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    sets = [*MICRO, f"output.root={blocker}/runs"]
    error = refused(["run", str(config), *(a for s in sets for a in ("--set", s))], capfd)
    assert error == f"fedgray: error: {blocker}/runs: {blocker} is not a folder"
    assert sorted(tmp_path.iterdir()) == [config, blocker]
    assert blocker.read_text() == "not a folder\n"


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process: its write bits for a user; for root, whom
    permission bits do not stop (CI runs as root), the immutable attribute."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)


def test_an_unwritable_root_or_run_folder_is_refused_before_a_byte_is_written(
    finished: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("federation:\n  partitioner: iid\n")
    sets = [*MICRO, f"output.root={locked}/runs"]
    with unwritable(locked):
        error = refused(["run", str(config), *(a for s in sets for a in ("--set", s))], capfd)
        assert error.startswith(f"fedgray: error: {locked}/runs: {locked} is not writable")
        assert not any(locked.iterdir())
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    for target in (copy, copy / "metrics.jsonl"):
        before = _checksums(copy)
        with unwritable(target):
            argv = ["run", "--resume", str(copy), "--set", "federation.num_rounds=3"]
            error = refused(argv, capfd)
            assert error.startswith(f"fedgray: error: {copy}: {target} is not writable")
        assert _checksums(copy) == before
