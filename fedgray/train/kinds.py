"""Trainer kinds: how a family of methods trains, registered once.

Every method of :data:`fedgray.adapters.METHODS` names its kind (``Method.trainer``). A
kind says how ``fedgray adapt`` trains the method, which shared tensors a federation
starts from, how a site trains one round from them and how they are scored, and which
federated settings it refuses. Kinds speak plain tensors: :mod:`fedgray.fl` converts
Flower records to these calls and back. A new method family is one new module that calls
:func:`register` (and is named in :data:`BUILTIN` or imported before use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedgray.adapters.methods import method_spec
from fedgray.backbone import Backbone
from fedgray.config import Config, MethodConfig
from fedgray.config_schema import ConfigError
from fedgray.privacy import Ledger
from fedgray.tasks import TaskData
from fedgray.train.job import Job, Trained

State = dict[str, torch.Tensor]
BUILTIN = ("fedgray.train.gradient", "fedgray.blackbox.kind")


@dataclass(frozen=True)
class SiteRound:
    """One site's round: the global tensors (plus its personal ones) and its data.

    ``ledger``: the site's DP accounting so far (None without DP); ``seed``: the round's
    local randomness, from (federation seed, round, partition); ``drawn``: under
    ``privacy.audit``, the sizes of the batches the audited site drew in its earlier rounds.
    """

    config: Config
    backbone: Backbone
    data: TaskData
    shared: State
    personal: State
    server_round: int
    partition_id: int
    seed: int
    proximal_mu: float = 0.0
    ledger: Ledger | None = None
    drawn: tuple[int, ...] = ()


@dataclass(frozen=True)
class SiteUpdate:
    """A site's round outcome: all its tensors (the caller splits off personal ones), its
    metrics and, under DP, its ledger after the round. Under ``privacy.audit``, at the
    audited site: ``drawn``, the sizes of every batch it drew so far (this round's
    included), and ``audit``, its evidence after the last round (canaries, guesses, right
    ones, and the sampler check's p-value over ``drawn``)."""

    state: State
    metrics: dict[str, float]
    ledger: Ledger | None = None
    audit: dict[str, int | float | str] | None = None
    drawn: tuple[int, ...] = ()


# A federated setting a kind does not support: (config field, is it set, why not).
Refusal = tuple[str, Callable[[Config], bool], str]


@dataclass(frozen=True)
class TrainerKind:
    """How methods of one family train, alone and federated.

    ``adapt_queries(config, validation, test)``: the most backbone calls ``adapt`` makes
    and its :attr:`Trained.score` makes on ``test``, known before training starts, so that
    ``fedgray adapt`` refuses a query budget that would run out part way; None where a
    kind cannot say ahead (its calls are then refused one by one when the budget is spent).
    """

    name: str
    adapt: Callable[[Job], Trained]
    start: Callable[[Config, Backbone, Callable[[], TaskData]], State]
    train_round: Callable[[SiteRound], SiteUpdate]
    score: Callable[[Config, Backbone, State, TaskData], dict[str, float]]
    refusals: tuple[Refusal, ...] = ()
    adapt_queries: Callable[[Config, TaskData, TaskData], int] | None = None


TRAINER_KINDS: dict[str, TrainerKind] = {}


def register(kind: TrainerKind) -> TrainerKind:
    """Add ``kind`` to :data:`TRAINER_KINDS` (once: a second kind of that name is an error)."""
    if TRAINER_KINDS.get(kind.name, kind) is not kind:
        raise ValueError(f"trainer kind '{kind.name}' is already registered")
    TRAINER_KINDS[kind.name] = kind
    return kind


def known_kinds() -> dict[str, TrainerKind]:
    """Every registered kind (the built-in modules are imported on first use: they import
    this module, and the method registry must not import them)."""
    for module in BUILTIN:
        importlib.import_module(module)
    return TRAINER_KINDS


def trainer_kind(name: str) -> TrainerKind:
    """The registered kind ``name``; a one-line error names the known ones."""
    kinds = known_kinds()
    if name not in kinds:
        raise ValueError(f"unknown trainer kind '{name}' (known: {', '.join(kinds)})")
    return kinds[name]


def kind_of(method: MethodConfig) -> TrainerKind:
    """The kind that trains ``method``."""
    return trainer_kind(method_spec(method.name).trainer)


def refuse_unsupported(config: Config) -> Config:
    """``config``, unless its kind refuses one of its federated settings (one-line error)."""
    kind = kind_of(config.method)
    for field_name, refused, reason in kind.refusals:
        if refused(config):
            raise ConfigError(
                f"{field_name}: not with method '{config.method.name}' in federated runs ({reason})"
            )
    return config
