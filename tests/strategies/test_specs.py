"""A strategy's registry row carries what the rest of a run relies on: the config accepts
it under secure aggregation or central DP as its row says, and the screen folds the replies
of an averaging one as they arrive."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedMedian

from fedgray.config_schema import ConfigError
from fedgray.resolver import load_config
from strategies import build_strategy, registry
from strategies.registry import StrategySpec

SECURE = ["federation.num_sites=4", "federation.secure_aggregation.enabled=true"]
CENTRAL = ["privacy.central.enabled=true"]


@pytest.mark.parametrize(
    ("section", "flag", "why"),
    [
        (SECURE, "secure", "secure aggregation reveals only the sum of the updates"),
        (CENTRAL, "central", "central DP calibrates its noise to a mean of clipped updates"),
    ],
)
def test_the_config_takes_a_strategy_as_its_row_says(
    monkeypatch: pytest.MonkeyPatch, section: list[str], flag: str, why: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, [*section, "federation.strategy=fedmedian"])
    message = str(refused.value)
    assert message.startswith(f"federation.strategy: {why}; 'fedmedian'")
    assert message.endswith(f"(use {', '.join(registry.strategies_with(flag))})")
    monkeypatch.setitem(registry.STRATEGIES, "median", StrategySpec(FedMedian, **{flag: True}))
    config = load_config(None, [*section, "federation.strategy=median"])
    assert config.federation.strategy == "median"


def test_the_screen_folds_the_replies_of_a_row_marked_averaging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not build_strategy("fedmedian", num_sites=3).folds  # type: ignore[attr-defined]
    averaging = StrategySpec(FedMedian, averaging=True)
    monkeypatch.setitem(registry.STRATEGIES, "median", averaging)
    assert build_strategy("median", num_sites=3).folds  # type: ignore[attr-defined]
