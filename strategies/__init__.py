"""Aggregation of adapter updates on Flower's strategies: a registry, an update guard,
personalisation helpers and checkpointable strategy state."""

from strategies.guard import ORDER_KEY, Rejection, UpdateGuard, guarded
from strategies.personal import is_personal, split_personal
from strategies.registry import STRATEGIES, StrategyError, build_strategy
from strategies.state import restore_strategy_state, strategy_state

__all__ = [
    "ORDER_KEY",
    "STRATEGIES",
    "Rejection",
    "StrategyError",
    "UpdateGuard",
    "build_strategy",
    "guarded",
    "is_personal",
    "restore_strategy_state",
    "split_personal",
    "strategy_state",
]
