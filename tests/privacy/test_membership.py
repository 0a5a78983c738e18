"""Membership inference metrics and attacks: exact AUC, TPR at a low FPR, calibration."""

from __future__ import annotations

import pytest
import torch

from fedgray.privacy.membership import ATTACKS, attack, auc, tpr_at_fpr


def test_auc_is_the_share_of_member_non_member_pairs_ordered_right() -> None:
    members, others = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([2.0, 0.0])
    # pairs (m > o): 3>2, 3>0, 2>0, 1>0; the tie 2=2 counts one half: 4.5 of 6
    assert auc(members, others) == pytest.approx(4.5 / 6)
    assert auc(others, members) == pytest.approx(1.5 / 6)


def test_auc_of_one_distribution_against_itself_is_near_one_half() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4000, generator=generator)
    assert auc(scores[:2000], scores[2000:]) == pytest.approx(0.5, abs=0.02)


def test_tpr_at_one_percent_fpr_counts_members_above_the_99th_non_member() -> None:
    others = torch.arange(1000, dtype=torch.float)  # 10 of them (990..999) may score above
    members = torch.tensor([995.0, 989.5, 989.0, 2000.0])
    assert tpr_at_fpr(members, others) == pytest.approx(3 / 4)  # all but 989 pass 989
    assert tpr_at_fpr(members, others, fpr=0.0) == pytest.approx(1 / 4)


def test_calibration_finds_members_that_the_raw_loss_misses() -> None:
    """Members are easy and hard alike; the target lowers each member's loss by 0.5. Raw loss
    ranks by difficulty; losses minus the references' (which never saw them) rank by
    membership."""
    generator = torch.Generator().manual_seed(1)
    difficulty = 3 * torch.rand(400, generator=generator)
    is_member = torch.arange(400) % 2 == 0
    references = difficulty + 0.05 * torch.randn(4, 400, generator=generator)
    target = difficulty - 0.5 * is_member.float()
    raw = attack(ATTACKS["loss"](target, references), is_member)
    calibrated = attack(ATTACKS["calibrated"](target, references), is_member)
    assert 0.5 < raw.auc < 0.75 and raw.tpr_at_1_percent < 0.3  # the easiest members only
    assert calibrated.auc > 0.99 and calibrated.tpr_at_1_percent > 0.9
