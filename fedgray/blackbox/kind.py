"""The ``craft`` trainer kind: CraFT alone (``fedgray adapt``) and federated (FedBPT-style)."""

from __future__ import annotations

from fedgray.blackbox import federated
from fedgray.blackbox.trainer import craft_queries, train_craft
from fedgray.train.kinds import Refusal, TrainerKind, register

# What federated CraFT does not support.
REFUSALS: tuple[Refusal, ...] = (
    ("train.task", lambda c: c.train.task != "classification", "CraFT classifies only"),
    (
        "federation.strategy",
        lambda c: c.federation.strategy != "fedavg",
        "federated CraFT averages the search distributions: fedavg only",
    ),
    ("privacy.enabled", lambda c: c.privacy.enabled, "DP-SGD needs gradients; CraFT has none"),
    (
        "privacy.central.enabled",
        lambda c: c.privacy.central.enabled,
        "clipping a search distribution's update is not supported",
    ),
    (
        "federation.secure_aggregation.enabled",
        lambda c: c.federation.secure_aggregation.enabled,
        "SecAgg+ with CraFT is not supported",
    ),
    (
        "federation.personal",
        lambda c: bool(c.federation.personal),
        "CraFT has no personal adapters",
    ),
)

CRAFT = register(
    TrainerKind(
        "craft",
        train_craft,
        federated.start,
        federated.train_round,
        federated.score,
        refusals=REFUSALS,
        adapt_queries=craft_queries,
    )
)
