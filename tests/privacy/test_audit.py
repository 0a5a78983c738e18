"""The one-run audit against planted DP bugs: each bug is caught (the bound exceeds the
accountant's epsilon), the correct build is not (the bound stays below it).

Each bug is planted through a test-only seam (monkeypatch) in the Opacus pieces that
:func:`fedgray.privacy.make_private` puts together, so the audited run is the real one
(the one local trainer, Opacus' optimizer, the ledger) with one thing broken, as an
implementation bug would break it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fedgray.audit import AuditFailed, AuditOptions, AuditResult, audit, check
from fedgray.backbone import SealedBackbone
from fedgray.cli import main
from fedgray.privacy.canaries import input_canaries
from fedgray.resolver import load_config
from simulations.audit_power import AUDITED
from simulations.planted_bugs import BUGS, no_noise, shuffling
from tests.helpers import captioned_data


def _audited(tmp_path: Path, what: str) -> AuditResult:
    """The audit of :data:`AUDITED` with its default canaries; prints the figures that
    docs/privacy-audit.md reports (``pytest -s`` shows them)."""
    config = load_config(None, [*AUDITED, f"output.root={tmp_path}"])
    result = audit(config, options=AuditOptions(), progress=False, echo=lambda _: None)
    print(
        f"\n{what}: lower bound {result.lower_bound:.2f} ({result.correct} of {result.guesses} "
        f"right), accountant's epsilon {result.epsilon:.2f}"
    )
    return result


@pytest.mark.slow
def test_the_correct_build_passes_the_audit(tmp_path: Path) -> None:
    result = _audited(tmp_path, "correct build")
    assert result.epsilon == pytest.approx(1.0, abs=0.01)
    assert result.lower_bound <= result.epsilon
    assert check(result) is result


@pytest.mark.slow
@pytest.mark.parametrize("bug", BUGS)
def test_the_audit_catches_a_planted_bug(
    bug: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    BUGS[bug](monkeypatch.setattr)
    result = _audited(tmp_path, bug)
    assert result.lower_bound > result.epsilon, f"{bug}: {result.correct}/{result.guesses} right"
    with pytest.raises(AuditFailed, match="exceeds the accountant's epsilon"):
        check(result)


@pytest.mark.slow
def test_the_audit_catches_shuffling_in_place_of_poisson_sampling_by_its_batches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The final adapters do not show it (the bound stays below epsilon, as on the correct
    build); the batches drawn do."""
    shuffling(monkeypatch.setattr)
    result = _audited(tmp_path, "shuffling")
    assert result.lower_bound <= result.epsilon
    assert result.sampling is not None and result.sampling_p_value < 1e-6
    with pytest.raises(AuditFailed, match="not Poisson-sampled at the accountant's rate"):
        check(result)


# The command on the micro CLIP: fewer canaries and steps, still far apart with noise off.
MICRO = [
    "backbone.name=fedgray-micro",
    "backbone.pretrained=null",
    "data.train_size=100",
    "data.test_size=20",
    "method.name=output",
    "train.batch_size=64",
    "train.steps=150",
    "train.lr=0.05",
    "train.threads=1",
    "privacy.enabled=true",
    "privacy.noise_multiplier=20",  # epsilon 1.1 (no calibration: a faster test)
    "privacy.max_grad_norm=0.01",
    "privacy.cache_features=true",
]
SMALL = ["--canaries", "100", "--guesses", "40"]


def _command(tmp_path: Path, *extra: str) -> int:
    overrides = [f"--set={o}" for o in [*MICRO, f"output.root={tmp_path}", "output.name=a"]]
    return main(["audit", *overrides, "--quiet", *SMALL, *extra])


def test_the_audit_command_reports_its_bound_beside_the_accountants_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _command(tmp_path) == 0
    out = capsys.readouterr().out
    found = re.search(r"empirical epsilon >= ([\d.]+) .* accountant's epsilon ([\d.]+)", out)
    assert found is not None, out
    bound, epsilon = map(float, found.groups())
    assert bound <= epsilon < 1.5
    record = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert record["passed"] and len(record["scores"]) == 100
    assert record["sampling_p_value"] > 1e-6 and len(record["batch_sizes"]) == 150
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["audit.json", "config.yaml"]


def test_the_audit_command_fails_in_one_line_when_the_bound_exceeds_epsilon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_noise(monkeypatch.setattr)
    assert _command(tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exceeds the accountant's epsilon" in err[0]


def test_the_audit_command_fails_in_one_line_when_batches_are_shuffled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shuffling(monkeypatch.setattr)
    assert _command(tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not Poisson-sampled at the accountant's rate" in err[0]


def test_the_audit_refuses_a_run_without_dp_in_one_line_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _command(tmp_path, "--set=privacy.enabled=false") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "privacy.enabled" in err[0]
    assert not (tmp_path / "a").exists()


def test_input_canaries_are_site_examples_with_another_label_and_caption(
    micro: SealedBackbone,
) -> None:
    data = captioned_data(micro, n=12, vocabulary=True)
    canaries, rest = input_canaries(data, count=5, generator=torch.Generator().manual_seed(0))
    assert len(canaries) == 5 and len(rest) == 7
    origin = [
        next(i for i in range(len(data)) if torch.equal(data.images[i], image))
        for image in canaries.images
    ]
    assert len(set(origin)) == 5
    assert not any(torch.equal(data.images[i], image) for i in origin for image in rest.images)
    for row, i in enumerate(origin):
        assert canaries.labels[row] != data.labels[i]
        assert not torch.equal(canaries.tokens[row], data.tokens[i])
        assert any(torch.equal(canaries.tokens[row], t) for t in data.public_tokens)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--guesses", "101", "--canaries", "100"], "--guesses"),
        (["--canary", "gradient"], "--canary"),
        (["--canary", "feature", "--set=privacy.cache_features=false"], "--canary"),
        (["--confidence", "1"], "--confidence"),
    ],
)
def test_bad_audit_options_are_refused_in_one_line_naming_them(
    options: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _command(tmp_path, *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fedgray: error: {field}:")
    assert not (tmp_path / "a").exists()
