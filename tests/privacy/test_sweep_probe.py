"""The sweep's linear-probe floor: a logistic regression on the frozen backbone's features,
its strength chosen on validation, never on the test split it reports."""

from __future__ import annotations

from pathlib import Path

from fedgray.sweep import PROBE, table
from fedgray.sweep_probe import STRENGTHS, probe_accuracy
from tests.helpers import micro_config

DIGITS = [
    "data.dataset=digits",
    "train.task=classification",
    "data.train_size=300",
    "data.validation_size=100",
]


def test_the_probe_beats_chance_and_chooses_without_the_test_split(tmp_path: Path) -> None:
    first = probe_accuracy(micro_config(tmp_path, *DIGITS, "data.test_size=100"))
    other = probe_accuracy(micro_config(tmp_path, *DIGITS, "data.test_size=60"))
    assert first["linear_probe_c"] in STRENGTHS
    assert first["linear_probe_c"] == other["linear_probe_c"]  # another test split: same choice
    assert first["linear_probe_accuracy"] > 3 * 10.0  # ten classes: chance is 10%
    row = {
        "site_size": None,
        "target_epsilon": 8.0,
        "seed": 0,
        "achieved_max_epsilon": 7.9,
        "noise_multiplier": 1.0,
        "accuracy": 50.0,
        "gain_kept": None,
        "seconds": 1.0,
        "metric": "accuracy",
        "zero_shot_accuracy": 20.0,
        **first,
    }
    shown = f"linear probe, all sites' data pooled, no DP: {first[PROBE]:.1f}"
    assert table([row])[-1] == shown
