"""Canaries planted in a site's training data for the one-run audit, and what they show.

Used by ``fedgray audit`` (one site, ``train.steps`` steps) and by a federated run with
``privacy.audit`` (the audited site, every round): the same canaries
(:mod:`fedgray.privacy.canaries`), the same draw (each a member with probability 1/2),
the same score (how much training lowered each canary's per-sample loss) and the same
guesser, so both report the bound of :mod:`fedgray.privacy.audit_bound` on the same
evidence. Canaries live in the site's memory only: they are made again from their seed
wherever they are needed, never saved, and never part of the data a site scores utility on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from fedgray.adapters import AdaptedCLIP
from fedgray.config import Config, PrivacyConfig
from fedgray.config_schema import ConfigError
from fedgray.privacy.canaries import (
    draw_members,
    feature_canaries,
    guess,
    input_canaries,
    joined,
    per_sample_losses,
    selected,
)
from fedgray.privacy.features import CachedImageHead, backbone_features
from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Task


def canary_kind(privacy: PrivacyConfig, given: str | None = None) -> str:
    """``given``, or the default: ``feature`` where DP-SGD steps over cached features (the
    mechanism's input is then a feature vector), else ``input``."""
    kind = given or ("feature" if privacy.cache_features else "input")
    if kind == "feature" and not privacy.cache_features:
        raise ConfigError(
            "--canary: feature canaries need DP-SGD on cached features (privacy.cache_features)"
        )
    return kind


@dataclass(frozen=True)
class Planted:
    """Canaries in a site's training data: all of them, which are members, the data the
    site trains on (member input canaries joined) and the rows given as features (member
    feature canaries, joined by the trainer after it caches the site's features)."""

    kind: str
    canaries: TaskData
    members: torch.Tensor
    data: TaskData
    rows: TaskData | None

    def losses(self, model: AdaptedCLIP, task: Task) -> torch.Tensor:
        """Each canary's per-sample loss under ``model`` (through its cached-feature head
        for feature canaries, whose images are features)."""
        scored = CachedImageHead(model) if self.kind == "feature" else model
        scale = model.backbone.interface.logit_scale  # the task applies its own loss scale
        return per_sample_losses(scored, task, self.canaries, scale=scale)

    def right_guesses(self, scores: torch.Tensor, *, guesses: int) -> int:
        """How many of the guesser's ``guesses`` are right: "member" on the highest
        ``guesses // 2`` scores, "non-member" on the lowest others."""
        guessed_in = guesses // 2
        made = guess(scores, guesses_in=guessed_in, guesses_out=guesses - guessed_in)
        right = ((made == 1) & self.members) | ((made == -1) & ~self.members)
        return int(right.sum())


def plant(model: AdaptedCLIP, train: TaskData, *, kind: str, count: int, seed: int) -> Planted:
    """``count`` canaries of ``kind`` for a site training ``model`` on ``train``, each a
    member with probability 1/2, all drawn from ``seed`` (apart from the training's seeds).
    Feature canaries are drawn in the space DP-SGD steps over (the backbone's features,
    cached once per process); input canaries are taken from ``train``."""
    generator = torch.Generator().manual_seed(seed)
    members = draw_members(count, generator=generator)
    if kind == "feature":
        space = replace(train, images=backbone_features(model, train.images))
        canaries, _ = feature_canaries(space, count=count, generator=generator)
        return Planted(kind, canaries, members, train, selected(canaries, members))
    canaries, rest = input_canaries(train, count=count, generator=generator)
    return Planted(kind, canaries, members, joined(rest, selected(canaries, members)), None)


AUDITED_PARTITION = 0  # the partition that plants canaries under ``privacy.audit``
_AUDIT_STREAM = 0x617564  # the canaries' seed stream, apart from every training seed


def planted_at_site(
    config: Config, model: AdaptedCLIP, data: TaskData, *, partition_id: int
) -> Planted | None:
    """The canaries site ``partition_id`` trains with under ``privacy.audit`` (None at
    every other site, or without the audit): the same ones every round, from the
    federation's seed."""
    privacy = config.privacy
    if not privacy.audit or partition_id != AUDITED_PARTITION:
        return None
    kind, count = canary_kind(privacy), privacy.audit_canaries
    if kind == "input" and count >= len(data):
        raise ConfigError(
            f"privacy.audit_canaries: input canaries are taken from site {partition_id}'s "
            f"{len(data)} training examples: give fewer than {len(data)} (got {count})"
        )
    seed = int(np.random.SeedSequence([config.federation.seed, _AUDIT_STREAM]).generate_state(1)[0])
    return plant(model, data, kind=kind, count=count, seed=seed)
