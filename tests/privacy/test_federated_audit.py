"""``privacy.audit`` inside a federated run: canaries planted at site 0, the bound over the
whole run beside that site's epsilon in metrics.jsonl, summary.json and report.html, and
a run whose bound exceeds its epsilon (noise off) ending with one line; the batches site 0
drew over the run checked against the accountant's Poisson sampling beside the bound, and
a run whose sampler shuffles instead ending with one line.

A random micro CLIP, 2 sites of 120 examples (96 trained), DP-SGD on the output adapter
over cached features at a small clipping norm, 2 rounds of 15 steps, 100 feature canaries
and 40 guesses: the setting of ``fedgray audit``'s command test, federated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgray.config_schema import ConfigError
from fedgray.fl.serverapp.failures import FederationError
from fedgray.privacy.planted import AUDITED_PARTITION
from fedgray.privacy.sampling_check import LEVEL
from fedgray.resolver import load_config
from simulations.planted_bugs import no_noise, shuffling
from tests.helpers import SECURE, micro_config, run_local

AUDITED = [
    "data.train_size=240",
    "method.name=output",
    "train.batch_size=64",
    "train.lr=0.05",
    "federation.num_sites=2",
    "federation.local_steps=15",
    "federation.fraction_evaluate=0",
    "federation.central_eval=true",
    "privacy.enabled=true",
    "privacy.noise_multiplier=20",
    "privacy.max_grad_norm=0.01",
    "privacy.cache_features=true",
    "privacy.audit=true",
    "privacy.audit_canaries=100",
    "privacy.audit_guesses=40",
]


def _last_privacy(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return dict(json.loads(lines[-1])["privacy"])


def test_a_federated_run_reports_the_audited_sites_bound_beside_its_epsilon(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    result, summary, grid = run_local(micro_config(tmp_path, *AUDITED), echo=lines.append)
    privacy = _last_privacy(result.run_dir)
    audit = privacy["audit"]
    assert summary["audit"] == audit
    assert (audit["site"], audit["canaries"], audit["guesses"]) == (AUDITED_PARTITION, 100, 40)
    assert audit["epsilon"] == privacy["epsilon"][str(AUDITED_PARTITION)] < 1.5
    assert audit["lower_bound"] <= audit["epsilon"] and audit["passed"]
    # every batch site 0 drew in the run (2 rounds of 15 steps) fits Poisson sampling
    assert audit["batches"] == 30 and audit["sampling"] is None
    assert LEVEL <= audit["sampling_p_value"] <= 1
    closing = [line for line in lines if line.startswith("audit at site 0: ")]
    assert len(closing) == 1
    assert closing[0].endswith(
        f"30 batches against Poisson sampling at the accountant's rate: "
        f"p = {audit['sampling_p_value']:.2g}"
    )
    report = (result.run_dir / "report.html").read_text()
    assert 'id="audit"' in report and "sampling p-value" in report
    # Only counts and the p-value leave the site (no batch size); its weight in the average
    # is its own data, canaries apart.
    replies = [m for m in grid.received if "privacy-ledger" in m.content]
    keys = {k for m in replies for k in m.content["privacy-ledger"] if k.startswith("audit")}
    assert keys == {
        "audit-canaries",
        "audit-guesses",
        "audit-correct",
        "audit-batches",
        "audit-sampling-p",
    }
    weights = {int(m.content["metrics"]["num-examples"]) for m in replies}
    assert weights == {96}


@pytest.mark.slow
def test_the_audit_reaches_the_server_under_secagg(tmp_path: Path) -> None:
    """Under SecAgg+ the counts and the sampler check travel in the legacy Fit metrics,
    beside the ledger."""
    result, summary, _ = run_local(micro_config(tmp_path, *AUDITED, *SECURE))
    audit = _last_privacy(result.run_dir)["audit"]
    assert summary["audit"] == audit and audit["passed"]
    assert (audit["site"], audit["canaries"], audit["guesses"]) == (AUDITED_PARTITION, 100, 40)
    assert audit["batches"] == 30 and audit["sampling_p_value"] >= LEVEL


def test_a_federated_audit_ends_the_run_in_one_line_when_noise_is_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_noise(monkeypatch.setattr)
    config = micro_config(tmp_path, *AUDITED)
    with pytest.raises(FederationError) as failed:
        run_local(config)
    line = str(failed.value)
    assert "\n" not in line and "exceeds the accountant's epsilon" in line and "site 0" in line
    run_dir = tmp_path / "run"
    audit = json.loads((run_dir / "summary.json").read_text())["audit"]
    assert audit["lower_bound"] > audit["epsilon"] and not audit["passed"]
    assert audit == _last_privacy(run_dir)["audit"]


def test_a_federated_audit_ends_the_run_in_one_line_when_the_sampler_shuffles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The final adapters do not show shuffling (the bound stays within epsilon); the
    batches site 0 drew over the run do, and the run fails on them."""
    shuffling(monkeypatch.setattr)
    config = micro_config(tmp_path, *AUDITED)
    with pytest.raises(FederationError) as failed:
        run_local(config)
    line = str(failed.value)
    assert "\n" not in line and line.endswith("at site 0")
    assert "the 30 batches drawn are not Poisson-sampled at the accountant's rate" in line
    run_dir = tmp_path / "run"
    audit = json.loads((run_dir / "summary.json").read_text())["audit"]
    assert audit == _last_privacy(run_dir)["audit"]
    assert audit["lower_bound"] <= audit["epsilon"] and not audit["passed"]
    assert audit["sampling_p_value"] < LEVEL and f"{audit['sampling']} at site 0" == line
    assert "not Poisson-sampled" in (run_dir / "report.html").read_text()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["privacy.audit=true"], "privacy.audit"),
        (
            ["privacy.enabled=true", "privacy.noise_multiplier=1", "privacy.audit=true"]
            + ["federation.fraction_train=0.5"],
            "privacy.audit",
        ),
        (["privacy.audit_canaries=10", "privacy.audit_guesses=11"], "privacy.audit_guesses"),
    ],
)
def test_bad_audit_settings_are_refused_in_one_line_naming_the_field(
    overrides: list[str], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        load_config(None, overrides)
