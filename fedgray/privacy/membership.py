"""Membership inference against trained adapters: what the final model tells about who
trained it, measured as an attacker would.

Two attacks, both on per-sample losses (a member's loss is what training pushed down):

- ``loss``: the lower a sample's loss under the target model, the likelier a member
  (Yeom et al. 2018);
- ``calibrated``: the same loss minus what reference models, trained the same way on
  other data from the same population, give that sample (difficulty calibration, Watson
  et al. 2022): an easy sample has a low loss everywhere, a member only where it trained.

Scored by the area under the ROC curve (0.5: chance) and the true-positive rate at a 1%
false-positive rate (what an attacker gets when it must rarely be wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def auc(members: torch.Tensor, others: torch.Tensor) -> float:
    """The probability that a random member scores above a random non-member (ties count
    one half): the area under the ROC curve, exactly (Mann-Whitney)."""
    above = (members[:, None] > others[None, :]).double().mean()
    ties = (members[:, None] == others[None, :]).double().mean()
    return float(above + 0.5 * ties)


def tpr_at_fpr(members: torch.Tensor, others: torch.Tensor, *, fpr: float = 0.01) -> float:
    """The share of members scoring strictly above a threshold that at most ``fpr`` of the
    non-members exceed (the lowest such threshold)."""
    allowed = int(fpr * len(others))  # non-members that may score above the threshold
    threshold = torch.sort(others, descending=True).values[allowed]
    return float((members > threshold).double().mean())


def loss_scores(target: torch.Tensor, references: torch.Tensor | None = None) -> torch.Tensor:
    """Membership scores (higher: likelier a member) from per-sample losses under the target
    model, calibrated by the mean loss under reference models [K, N] when given."""
    if references is None:
        return -target
    return references.mean(dim=0) - target


@dataclass(frozen=True)
class AttackResult:
    """One attack's success: ROC AUC and TPR at 1% FPR."""

    auc: float
    tpr_at_1_percent: float


def attack(scores: torch.Tensor, is_member: torch.Tensor) -> AttackResult:
    """How well ``scores`` separate members from non-members (``is_member``, boolean)."""
    members, others = scores[is_member], scores[~is_member]
    return AttackResult(auc(members, others), tpr_at_fpr(members, others))


ATTACKS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "loss": lambda target, references: loss_scores(target),
    "calibrated": loss_scores,
}
"""Attack name -> its scores from the target's per-sample losses [N] and the reference
models' [K, N]."""
