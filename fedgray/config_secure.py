"""Config sections for secure aggregation (SecAgg+) and central, site-level DP.

``federation.secure_aggregation`` makes the server learn only the sum of the sites' updates
(Flower's SecAgg+); ``privacy.central`` clips each site's update on the site and adds
Gaussian noise to the aggregate (Flower's client-side fixed-clipping DP wrappers). Both
need an aggregate that is a plain mean of the updates, so both run with ``fedavg`` only
(central DP also with ``fedprox``, whose server side is FedAvg's mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedgray.config_schema import ConfigError, check, positive

if TYPE_CHECKING:
    from fedgray.config import Config


@dataclass
class SecureAggregationConfig:
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) for the train phase.

    Each private key is split into ``num_shares`` shares (the site and its neighbours);
    ``reconstruction_threshold`` of them rebuild it, so a round survives sites that drop
    out as long as every survivor keeps that many live neighbours. Sites send the update
    (new minus global adapters) times ``weight / max_weight``, clipped to
    ``±clipping_range`` and quantized into ``quantization_range`` levels. Under
    ``privacy.central`` every weight is 1 and ``max_weight`` is taken as 1.
    """

    enabled: bool = False
    num_shares: int = field(default=3, metadata=check(lambda v: v > 2, "must be > 2"))
    reconstruction_threshold: int = field(
        default=2, metadata=check(lambda v: v >= 2, "must be >= 2")
    )
    clipping_range: float = field(default=8.0, metadata=positive())
    quantization_range: int = field(
        default=2**22, metadata=check(lambda v: 1 < v < 2**32, "must be in (1, 2**32)")
    )
    max_weight: float = field(default=1000.0, metadata=positive())

    def __post_init__(self) -> None:
        if self.reconstruction_threshold >= self.num_shares:
            raise ConfigError(
                "federation.secure_aggregation.reconstruction_threshold: must be less than "
                f"num_shares ({self.num_shares}), got {self.reconstruction_threshold}"
            )


@dataclass
class CentralPrivacyConfig:
    """Site-level DP: each site's update clipped to ``clipping_norm`` (L2, on the site), and
    Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / m`` added to the
    mean of the ``m`` sampled sites' updates. Epsilon at ``delta`` comes from Opacus' RDP
    accountant over all rounds (see :mod:`fedgray.fl.common.central`)."""

    enabled: bool = False
    noise_multiplier: float = field(default=1.0, metadata=positive())
    clipping_norm: float = field(default=1.0, metadata=positive())
    delta: float = field(default=1e-3, metadata=check(lambda v: 0 < v < 1, "in (0, 1)"))


def min_trained_sites(num_sites: int, fraction_train: float) -> int:
    """The fewest sites a round trains: the rounded fraction, at least one, at most all
    (``strategies.build_strategy`` gives it to Flower as ``min_train_nodes``)."""
    return max(1, min(num_sites, round(num_sites * fraction_train)))


def sampled_sites(num_sites: int, fraction_train: float) -> int:
    """How many sites Flower's FedAvg asks to train each round: the larger of
    :func:`min_trained_sites` and the truncated fraction, as FedAvg samples."""
    return max(int(num_sites * fraction_train), min_trained_sites(num_sites, fraction_train))


def _strategy_allows(name: str, flag: str, why: str) -> None:
    """Refuse strategy ``name`` unless its registry row sets ``flag``; ``why`` (with
    ``{name}``) says what the run needs."""
    from strategies.registry import strategies_with  # the rows carry the flags

    allowed = strategies_with(flag)
    if name not in allowed:
        reason = why.format(name=name)
        raise ConfigError(f"federation.strategy: {reason} (use {', '.join(allowed)})")


def check_secure_and_central(config: Config) -> None:
    """Cross-section checks of the two sections; one ConfigError line naming the field."""
    fed, central = config.federation, config.privacy.central
    secure = fed.secure_aggregation
    if secure.enabled:
        if fed.compression != "none":
            raise ConfigError(
                "federation.compression: SecAgg+ quantises the sum itself; use one or the other"
            )
        _strategy_allows(
            fed.strategy,
            "secure",
            "secure aggregation reveals only the sum of the updates; '{name}' needs each one",
        )
        sampled = sampled_sites(fed.num_sites, fed.fraction_train)
        if secure.num_shares > sampled:
            raise ConfigError(
                f"federation.secure_aggregation.num_shares: at most the {sampled} sites "
                f"sampled per round, got {secure.num_shares}"
            )
    if central.enabled:
        if fed.compression != "none":
            raise ConfigError(
                "federation.compression: central DP bounds each update by clipping it; a "
                "quantised update with error feedback can leave that bound"
            )
        _strategy_allows(
            fed.strategy,
            "central",
            "central DP calibrates its noise to a mean of clipped updates; '{name}' is not one",
        )
        if secure.enabled and secure.clipping_range < central.clipping_norm:
            raise ConfigError(
                "federation.secure_aggregation.clipping_range: must be >= "
                f"privacy.central.clipping_norm ({central.clipping_norm}) so that SecAgg+ never "
                f"clips a clipped update, got {secure.clipping_range}"
            )
