"""The one local trainer: the same schedule and the same DP-SGD in ``fedgray adapt`` and at
federated sites."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedgray.adapt import adapt
from fedgray.cli import main
from fedgray.config import Config
from fedgray.privacy.budget import BudgetExhausted
from fedgray.resolver import load_config
from simulations.recompute_epsilon import recompute_adapt
from tests.helpers import MICRO, micro_config, run_local

LR = 0.01


def _adapt_config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            *MICRO,
            "data.train_size=64",
            "train.steps=4",
            "train.eval_every=2",
            f"train.lr={LR}",
            f"output.root={tmp_path}",
            "output.name=adapt",
            *overrides,
        ],
    )


def _spy_on_rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the first group's learning rate at every AdamW step (DP or not)."""
    rates: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return rates


def _cosine(position: int, total: int) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * position / total))


def test_train_lr_is_one_cosine_schedule_in_adapt_and_at_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = _spy_on_rates(monkeypatch)
    adapt(_adapt_config(tmp_path), progress=False, echo=lambda _: None)
    assert rates == pytest.approx([_cosine(s, 4) for s in range(4)])
    rates.clear()
    # 3 sites x 2 rounds x 2 local steps: each round's call decays over its 2 steps.
    run_local(micro_config(tmp_path, f"train.lr={LR}"))
    assert rates == pytest.approx([_cosine(0, 2), _cosine(1, 2)] * 6)
    rates.clear()  # train.schedule: constant means lr at every step, in both
    adapt(_adapt_config(tmp_path, "train.schedule=constant", "output.name=c"),
          progress=False, echo=lambda _: None)  # fmt: skip
    run_local(micro_config(tmp_path, f"train.lr={LR}", "train.schedule=constant", name="c2"))
    assert rates == pytest.approx([LR] * (4 + 12))


def test_run_cosine_decays_once_over_all_rounds_as_a_central_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = _spy_on_rates(monkeypatch)
    adapt(_adapt_config(tmp_path, "train.schedule=run-cosine"), progress=False, echo=lambda _: None)
    assert rates == pytest.approx([_cosine(s, 4) for s in range(4)])
    rates.clear()
    # 3 sites x 2 rounds x 2 local steps: round r's steps sit at 2 (r - 1) + s of 4.
    run_local(micro_config(tmp_path, f"train.lr={LR}", "train.schedule=run-cosine", name="r"))
    assert rates == pytest.approx(
        [_cosine(0, 4), _cosine(1, 4)] * 3 + [_cosine(2, 4), _cosine(3, 4)] * 3
    )


def test_adapt_with_privacy_runs_dp_sgd_and_reports_a_reproducible_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["privacy.enabled=true", "privacy.target_epsilon=3.0"]
    result = adapt(_adapt_config(tmp_path, *overrides), progress=False, echo=lambda _: None)
    assert result.privacy is not None
    assert 2.9 < result.privacy["epsilon"] <= 3.0 and result.privacy["delta"] == 1e-5
    assert result.privacy["sample-rate"] == 8 / 64
    run = tmp_path / "adapt"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]
    assert 0 < records[1]["epsilon"] < records[2]["epsilon"] == result.privacy["epsilon"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["privacy"] == result.privacy
    reported, recomputed = recompute_adapt(run)
    assert reported == recomputed == result.privacy["epsilon"]
    from simulations.recompute_epsilon import main as recompute_main

    recompute_main([str(run)])
    assert "(equal)" in capsys.readouterr().out


def test_adapt_refuses_to_train_past_its_budget(tmp_path: Path) -> None:
    config = _adapt_config(
        tmp_path, "privacy.enabled=true", "privacy.noise_multiplier=0.5", "privacy.epsilon_budget=1"
    )
    with pytest.raises(BudgetExhausted, match="fedgray adapt: privacy budget reached"):
        adapt(config, progress=False, echo=lambda _: None)


def test_cli_adapt_prints_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("privacy:\n  enabled: true\n  noise_multiplier: 1.0\n")
    overrides = [
        f"--set={o}" for o in [*MICRO, "data.train_size=64", "train.steps=2", "train.eval_every=2"]
    ]
    assert main(["adapt", str(path), "--quiet", "--output", str(tmp_path), *overrides]) == 0
    assert "DP-SGD: epsilon " in capsys.readouterr().out


def test_every_method_names_a_registered_trainer_kind() -> None:
    from fedgray.adapters.methods import METHODS
    from fedgray.train.kinds import TrainerKind, known_kinds, register, trainer_kind

    kinds = known_kinds()
    assert {m.trainer for m in METHODS.values()} <= set(kinds)
    assert trainer_kind("craft").refusals and not trainer_kind("gradient").refusals
    with pytest.raises(ValueError, match="unknown trainer kind 'sgd' .known: gradient, craft"):
        trainer_kind("sgd")
    gradient = kinds["gradient"]
    clash = TrainerKind(
        "gradient", gradient.adapt, gradient.start, gradient.train_round, gradient.score
    )
    with pytest.raises(ValueError, match="trainer kind 'gradient' is already registered"):
        register(clash)


@pytest.mark.parametrize("private", [False, True])
def test_train_optimizer_sgd_steps_with_momentum_under_dp_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private: bool
) -> None:
    """``train.optimizer: sgd``: SGD with momentum 0.9 steps every adapter (wrapped by
    Opacus' DP optimizer under privacy), at ``train.lr`` by the schedule."""
    stepped: list[torch.optim.SGD] = []
    step = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        stepped.append(self)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    dp = ["privacy.enabled=true", "privacy.noise_multiplier=0.5"] if private else []
    config = _adapt_config(tmp_path, "train.optimizer=sgd", "train.schedule=constant", *dp)
    result = adapt(config, progress=False, echo=lambda _: None)
    assert len(stepped) == 4 and all(s.defaults["momentum"] == 0.9 for s in stepped)
    assert {g["lr"] for s in stepped for g in s.param_groups} == {LR}
    assert result.adapted != result.zero_shot
