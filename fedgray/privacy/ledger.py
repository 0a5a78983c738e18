"""One site's privacy ledger: its accountant history over every round it has trained.

The history is Opacus' own format, ``(noise_multiplier, sample_rate, steps)`` entries, so
epsilon at any round is what the chosen Opacus accountant computes from all steps so far,
never one round's share (a fresh ``PrivacyEngine`` per round would report that). It knows
no Flower: the federation encodes ledgers in its records (:mod:`fedgray.fl.common.private`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

# Opacus loads when an accountant is made: importing it costs every process (the
# simulation's, each actor's) about a second even where no site trains privately.
ACCOUNTANTS: dict[str, str] = {"rdp": "RDPAccountant", "prv": "PRVAccountant"}
"""``privacy.accountant`` -> the class of ``opacus.accountants`` it names."""

Entry = tuple[float, float, int]


@dataclass(frozen=True)
class Ledger:
    """An accountant kind and its full history (Opacus' ``accountant.history``)."""

    accountant: str
    history: tuple[Entry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"unknown accountant '{self.accountant}' (known: {', '.join(ACCOUNTANTS)})"
            )

    @property
    def steps(self) -> int:
        """DP-SGD steps taken so far."""
        return sum(steps for _, _, steps in self.history)

    def make_accountant(self) -> IAccountant:
        """A fresh Opacus accountant holding this history; it keeps counting when stepped."""
        accountant: IAccountant = getattr(
            importlib.import_module("opacus.accountants"), ACCOUNTANTS[self.accountant]
        )()
        accountant.history = [tuple(entry) for entry in self.history]
        return accountant

    def epsilon(self, delta: float) -> float:
        """Epsilon at ``delta`` of everything in the history (0 for an empty one); the RDP
        accountant's through :func:`rdp_epsilon`, the others' through Opacus."""
        if self.accountant == "rdp":
            return rdp_epsilon(self.history, delta)
        if not self.history:
            return 0.0
        return float(self.make_accountant().get_epsilon(delta=delta))

    def extended(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> Ledger:
        """This ledger after ``steps`` more steps (merged as Opacus' accountants merge them)."""
        accountant = self.make_accountant()
        for _ in range(steps):
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        return Ledger.of(accountant, self.accountant)

    def with_entry(self, noise_multiplier: float, sample_rate: float, steps: int) -> Ledger:
        """This ledger with one more history entry (``steps`` steps at that setting)."""
        entry = (float(noise_multiplier), float(sample_rate), int(steps))
        return Ledger(self.accountant, (*self.history, entry))

    @classmethod
    def of(cls, accountant: IAccountant, kind: str) -> Ledger:
        """The ledger of a live Opacus accountant."""
        history = tuple((float(n), float(q), int(s)) for n, q, s in accountant.history)
        return cls(kind, history)


def rdp_epsilon(history: Sequence[Entry], delta: float) -> float:
    """Epsilon at ``delta`` of ``history``, as Opacus' RDP accountant computes it (the sum of
    each entry's RDP curve, then the conversion; same operations in the same order: the
    same bits), with each entry's curve computed once per process. Each curve costs Opacus
    tens of milliseconds at its fractional orders, and the same entries come back: a site's
    privacy floor checks its total over every run on its data before each update leaves
    (a total that grows by an entry a round), and a noise calibration evaluates one ledger
    with many candidate entries."""
    if not history:
        return 0.0
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = sum([_rdp_curve(*entry) for entry in history])
    epsilon, _ = get_privacy_spent(orders=_orders(), rdp=rdp, delta=delta)
    return float(epsilon)


@functools.cache
def _orders() -> list[float]:
    """The RDP accountant's default orders (those its ``get_epsilon`` uses)."""
    from opacus.accountants import RDPAccountant

    return list(RDPAccountant.DEFAULT_ALPHAS)


@functools.lru_cache(maxsize=1024)
def _rdp_curve(noise: float, rate: float, steps: int) -> Any:
    """One history entry's RDP at every order (never changed in place: a sum makes new)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=_orders())
