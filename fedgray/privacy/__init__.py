"""Sample-level differential privacy at each site: Opacus DP-SGD, ledgers and budgets."""

from fedgray.privacy.engine import NoisePlan, PrivateTraining, make_private, plan_noise
from fedgray.privacy.ledger import ACCOUNTANTS, Ledger
from fedgray.privacy.objectives import PRIVATE_OBJECTIVES, private_task

__all__ = [
    "ACCOUNTANTS",
    "PRIVATE_OBJECTIVES",
    "Ledger",
    "NoisePlan",
    "PrivateTraining",
    "make_private",
    "plan_noise",
    "private_task",
]
