"""A DP-SGD run's budget check: refuse steps that would take epsilon above the budget.

The same check holds for a single site (``fedgray adapt``, a fresh ledger) and for a
federated site (its ledger across rounds); the federation turns the refusal into an error
reply (:mod:`fedgray.fl.common.private`), ``fedgray adapt`` into a one-line error.
"""

from __future__ import annotations

from fedgray.config import PrivacyConfig
from fedgray.privacy.engine import NoisePlan
from fedgray.privacy.ledger import Ledger


class BudgetExhausted(RuntimeError):
    """The next steps would take the trainer's epsilon above its budget; it does not train."""


def check_budget(
    ledger: Ledger, plan: NoisePlan, privacy: PrivacyConfig, *, steps: int, who: str
) -> None:
    """Raise :class:`BudgetExhausted` when ``steps`` more steps would exceed
    ``privacy.epsilon_budget``; ``who`` names the trainer in the message (``site 3``)."""
    if privacy.epsilon_budget is None:
        return
    after = ledger.extended(
        noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate, steps=steps
    ).epsilon(privacy.delta)
    if after > privacy.epsilon_budget:
        raise BudgetExhausted(
            f"{who}: privacy budget reached; {steps} more steps would take epsilon "
            f"from {ledger.epsilon(privacy.delta):.4f} to {after:.4f} (delta "
            f"{privacy.delta:g}), above its budget {privacy.epsilon_budget:g}: not training"
        )
