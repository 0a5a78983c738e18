"""Central (site-level) DP: Flower's client-side fixed-clipping wrappers and their accounting.

Each sampled site clips its update (new minus global adapters) to L2 norm ``C``
(``fixedclipping_mod``, on the train handler only); the server averages the ``n`` updates
it received and Flower's ``DifferentialPrivacyClientSideFixedClipping`` adds Gaussian noise
of standard deviation ``z * C / m`` to every coordinate of that mean (``m``: sites sampled).
Flower's wrappers do no accounting here (theirs needs ``dp-accounting``); this module keeps
one Opacus RDP ledger for the run.

Accounting, and what it assumes:

- **Neighbouring federations** differ in one site's contribution (add/remove, in the
  zero-out sense of DP-FedAvg): the sum of the clipped updates moves by at most ``C``.
- **Uniform weights**: every site reports weight 1 (:func:`aggregation_weight`), so the
  aggregate is exactly the plain mean ``sum / n`` (FedAvg would otherwise weight by data
  size and one site could move the mean by more than ``C / n``). The number of examples
  is then not sent either.
- **The release** ``sum / n + N(0, (zC/m)^2)`` equals ``(sum + N(0, (zCn/m)^2)) / n``: a
  Gaussian mechanism of noise multiplier ``z * n / m`` on a sensitivity-``C`` sum. That is
  what each round adds to the ledger (``z`` itself when every sampled site is aggregated,
  a smaller one when a site dropped or was rejected), so the figure is exact, not a guess.
- **No amplification by sampling**: the ledger uses sample rate 1. Flower picks exactly
  ``m`` sites without replacement; Opacus' RDP amplification is proved for Poisson
  sampling, so using ``m / N`` would overstate the privacy. With every site sampled
  (``m = N``) nothing is lost; with ``m < N`` the reported epsilon is an upper bound.
- A round whose aggregate is discarded (Flower's wrappers skip a round with any failed
  site) releases nothing and costs nothing. The server sees the mean before the noise:
  central DP protects the released adapters (against sites, users of the model and anyone
  reading them), not the sites' updates against the server (see docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.client.mod import fixedclipping_mod as legacy_fixedclipping_mod
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import Mod
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping as LegacyClientSideFixedClipping,
)
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy

from fedgray.config import CentralPrivacyConfig, Config, FederationConfig, sampled_sites
from fedgray.privacy import Ledger

ACCOUNTANT = "rdp"
SAMPLE_RATE = 1.0  # no amplification by site sampling (see the module docstring)


def aggregation_weight(central: CentralPrivacyConfig, num_examples: int) -> int:
    """The weight a site reports: 1 under central DP (a plain mean), else its data size."""
    return 1 if central.enabled else num_examples


def num_sampled(fed: FederationConfig) -> int:
    """``m``: the sites asked to train each round."""
    return sampled_sites(fed.num_sites, fed.fraction_train)


def noise_std(central: CentralPrivacyConfig, sampled: int) -> float:
    """Standard deviation of the noise Flower's wrappers add to the mean: ``z * C / m``."""
    return central.noise_multiplier * central.clipping_norm / sampled


def with_central_dp(strategy: Strategy, config: Config) -> Strategy:
    """``strategy`` wrapped in Flower's client-side fixed-clipping DP (Message API)."""
    central = config.privacy.central
    return DifferentialPrivacyClientSideFixedClipping(
        strategy, central.noise_multiplier, central.clipping_norm, num_sampled(config.federation)
    )


def with_legacy_central_dp(strategy: LegacyStrategy, config: Config) -> LegacyStrategy:
    """The same wrapper on Flower's legacy strategy API (the one SecAgg+ drives)."""
    central = config.privacy.central
    return LegacyClientSideFixedClipping(
        strategy, central.noise_multiplier, central.clipping_norm, num_sampled(config.federation)
    )


def clipping_mods(central: CentralPrivacyConfig, *, legacy: bool) -> list[Mod]:
    """The site's clipping mod for the train handler (none without central DP)."""
    if not central.enabled:
        return []
    return [legacy_fixedclipping_mod if legacy else fixedclipping_mod]


@dataclass
class CentralLedger:
    """The run's central accountant: one Gaussian release per round that updated the model."""

    central: CentralPrivacyConfig
    sampled: int
    ledger: Ledger = field(default_factory=lambda: Ledger(ACCOUNTANT))

    def update(self, released: int) -> dict[str, Any]:
        """Account a round whose aggregate holds ``released`` site updates (0: nothing
        released); the round's record for metrics.jsonl."""
        central = self.central
        if released > 0:
            self.ledger = self.ledger.extended(
                noise_multiplier=central.noise_multiplier * released / self.sampled,
                sample_rate=SAMPLE_RATE,
                steps=1,
            )
        return {
            "epsilon": self.ledger.epsilon(central.delta),
            "delta": central.delta,
            "noise_multiplier": central.noise_multiplier,
            "clipping_norm": central.clipping_norm,
            "noise_std": noise_std(central, self.sampled),
            "sampled": self.sampled,
            "aggregated": released,
            "releases": self.ledger.steps,
        }

    def state(self) -> dict[str, Any]:
        """Plain data for the checkpoint."""
        return {"history": [list(entry) for entry in self.ledger.history]}

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        history = tuple((float(n), float(q), int(s)) for n, q, s in state.get("history", ()))
        self.ledger = Ledger(ACCOUNTANT, history)
