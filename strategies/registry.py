"""Flower's strategies by name, each wrapped with the update screen."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)

from fedgray.config import min_trained_sites
from strategies.screen import screened


@dataclass(frozen=True)
class StrategySpec:
    """A strategy fedgray offers: Flower's class and what the rest of a run relies on.

    ``averaging``: its arrays aggregate is the weighted mean of the replies (FedAdam, FedYogi,
    FedAdagrad and FedAvgM then take a server step from it), so replies are folded into a
    running mean as they arrive (strategies/screen.py); the others need every reply at once.
    ``secure``: it needs only the sum of the updates, all that secure aggregation reveals.
    ``central``: it aggregates a mean of clipped updates, what central DP calibrates its
    noise to.
    """

    flower: type[FedAvg]
    averaging: bool = False
    secure: bool = False
    central: bool = False


STRATEGIES: dict[str, StrategySpec] = {
    "fedavg": StrategySpec(FedAvg, averaging=True, secure=True, central=True),
    "fedprox": StrategySpec(FedProx, averaging=True, central=True),
    "fedavgm": StrategySpec(FedAvgM, averaging=True),
    "fedadam": StrategySpec(FedAdam, averaging=True),
    "fedyogi": StrategySpec(FedYogi, averaging=True),
    "fedadagrad": StrategySpec(FedAdagrad, averaging=True),
    "fedmedian": StrategySpec(FedMedian),
    "fedtrimmedavg": StrategySpec(FedTrimmedAvg),
    "krum": StrategySpec(Krum),
    "multikrum": StrategySpec(MultiKrum),
    "bulyan": StrategySpec(Bulyan),
}


def strategies_with(flag: str) -> list[str]:
    """The strategies whose row sets ``flag`` (``averaging``, ``secure`` or ``central``)."""
    return [name for name, spec in STRATEGIES.items() if getattr(spec, flag)]


SETTABLE_TYPES = (bool, int, float, str)  # what a YAML config can give


def strategy_options(name: str) -> dict[str, type]:
    """The options a config may give strategy ``name``, with their types: its constructor's
    parameters beyond FedAvg's (fedgray sets those: sampling, record keys, metric
    aggregation) that take a plain value (not a callable); none for an unknown name."""
    if name not in STRATEGIES:
        return {}
    base = inspect.signature(FedAvg.__init__).parameters
    init = STRATEGIES[name].flower.__init__
    hints = typing.get_type_hints(init)
    return {
        key: hints[key]
        for key in inspect.signature(init).parameters
        if key != "self" and key not in base and hints.get(key) in SETTABLE_TYPES
    }


class StrategyError(ValueError):
    """An unknown strategy name or an option its constructor does not accept."""


def build_strategy(
    name: str,
    *,
    num_sites: int,
    fraction_train: float = 1.0,
    fraction_evaluate: float = 1.0,
    options: dict[str, Any] | None = None,
    presampled: bool = False,
) -> FedAvg:
    """Screened strategy ``name`` that waits for all ``num_sites`` sites to be connected.

    ``options`` go to the Flower constructor (``proximal_mu`` for FedProx, ``eta`` for
    FedAdam, ``beta`` for FedTrimmedAvg...). ``presampled``: the caller samples the sites
    and gives the configure steps a grid of only those (fedgray's seeded sampling, see
    :mod:`fedgray.fl.serverapp.roster`); the strategy then asks every node it is given
    (none to evaluate when ``fraction_evaluate`` is 0).
    """
    if name not in STRATEGIES:
        raise StrategyError(
            f"federation.strategy: unknown strategy '{name}' (known: {', '.join(STRATEGIES)})"
        )
    minimum = min_trained_sites(num_sites, fraction_train)
    sampling: dict[str, Any] = {
        "fraction_train": fraction_train,
        "fraction_evaluate": fraction_evaluate,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": 1 if fraction_evaluate else 0,
        "min_available_nodes": num_sites,
    }
    if presampled:
        sampling |= {"fraction_train": 1.0, "fraction_evaluate": float(fraction_evaluate > 0)}
        sampling |= {"min_train_nodes": 1, "min_available_nodes": 1}
    try:
        spec = STRATEGIES[name]
        strategy = screened(spec.flower, folds=spec.averaging)
        return strategy(**sampling, **(options or {}))
    except (TypeError, ValueError) as error:
        raise StrategyError(f"federation.strategy_options: {name}: {error}") from None
