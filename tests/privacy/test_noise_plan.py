"""A privacy target holds over the whole run when the plan changes (rounds added on resume)."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from fedgray.config import PrivacyConfig
from fedgray.privacy.engine import TargetUnreachable, plan_noise
from fedgray.privacy.ledger import Ledger

TARGET = PrivacyConfig(enabled=True, target_epsilon=4.0, delta=1e-5)
SITE = {"num_samples": 30, "batch_size": 8}


def _epsilon(*entries: tuple[float, float, int]) -> float:
    """Opacus' own RDP accountant over the entries (independent of Ledger)."""
    accountant = RDPAccountant()
    for sigma, rate, steps in entries:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=rate)
    return accountant.get_epsilon(delta=1e-5)


def test_an_unchanged_plan_keeps_its_noise_every_round() -> None:
    fresh = plan_noise(TARGET, **SITE, total_steps=8)
    spent = Ledger("rdp", ((fresh.noise_multiplier, fresh.sample_rate, 4),))
    assert plan_noise(TARGET, **SITE, total_steps=8, ledger=spent, remaining_steps=4) == fresh
    assert _epsilon((fresh.noise_multiplier, fresh.sample_rate, 8)) <= 4.0


def test_rounds_added_get_the_noise_that_keeps_the_target() -> None:
    first = plan_noise(TARGET, **SITE, total_steps=4)  # 2 rounds x 2 steps, all spent
    spent = Ledger("rdp", ((first.noise_multiplier, first.sample_rate, 4),))
    naive = plan_noise(TARGET, **SITE, total_steps=8)  # the naive resume: plan anew over all steps
    assert _epsilon((first.noise_multiplier, first.sample_rate, 4),
                    (naive.noise_multiplier, naive.sample_rate, 4)) > 4.0  # fmt: skip
    rest = plan_noise(TARGET, **SITE, total_steps=8, ledger=spent, remaining_steps=4)
    history = (first.noise_multiplier, first.sample_rate, 4)
    assert _epsilon(history, (rest.noise_multiplier, rest.sample_rate, 4)) <= 4.0
    # the smallest such noise, within the 1% tolerance: 2% less would break the target
    assert _epsilon(history, (rest.noise_multiplier * 0.98, rest.sample_rate, 4)) > 4.0
    # the next round keeps the recalibrated noise
    later = spent.with_entry(rest.noise_multiplier, rest.sample_rate, 2)
    again = plan_noise(TARGET, **SITE, total_steps=8, ledger=later, remaining_steps=2)
    assert again == rest


def test_a_target_below_what_is_spent_is_refused_in_one_line() -> None:
    spent = Ledger("rdp", ((0.8, 0.27, 20),))
    lower = PrivacyConfig(enabled=True, target_epsilon=1.0)
    with pytest.raises(TargetUnreachable, match=r"^privacy.target_epsilon: [\d.]+ of 1 already"):
        plan_noise(lower, **SITE, total_steps=30, ledger=spent, remaining_steps=10)
