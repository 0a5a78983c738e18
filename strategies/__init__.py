"""Aggregation of adapter updates on Flower's strategies: a registry, an update screen,
personalisation helpers and checkpointable strategy state."""

from strategies.personal import is_personal, split_personal
from strategies.registry import STRATEGIES, StrategyError, build_strategy
from strategies.screen import ORDER_KEY, Rejection, UpdateScreen, screened
from strategies.state import restore_strategy_state, strategy_state

__all__ = [
    "ORDER_KEY",
    "STRATEGIES",
    "Rejection",
    "StrategyError",
    "UpdateScreen",
    "build_strategy",
    "screened",
    "is_personal",
    "restore_strategy_state",
    "split_personal",
    "strategy_state",
]
