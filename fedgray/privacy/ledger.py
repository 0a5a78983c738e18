"""One site's privacy ledger: its accountant history over every round it has trained.

The history is Opacus' own format, ``(noise_multiplier, sample_rate, steps)`` entries, so
epsilon at any round is what the chosen Opacus accountant computes from all steps so far,
never one round's share (a fresh ``PrivacyEngine`` per round would report that). It knows
no Flower: the federation encodes ledgers in its records (:mod:`fedgray.fl.common.private`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
        """Epsilon at ``delta`` of everything in the history (0 for an empty one)."""
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
