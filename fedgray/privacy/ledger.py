"""One site's privacy ledger: its accountant history over every round it has trained.

The history is Opacus' own format, ``(noise_multiplier, sample_rate, steps)`` entries, so
epsilon at any round is what the chosen Opacus accountant computes from all steps so far,
never one round's share (a fresh ``PrivacyEngine`` per round would report that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import ConfigRecord
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant

ACCOUNTANTS: dict[str, type[IAccountant]] = {"rdp": RDPAccountant, "prv": PRVAccountant}

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
        accountant = ACCOUNTANTS[self.accountant]()
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

    def to_record(self) -> ConfigRecord:
        """A Flower ConfigRecord (for ``context.state``, replies and checkpoints)."""
        return ConfigRecord(
            {
                "accountant": self.accountant,
                "noise-multiplier": [n for n, _, _ in self.history],
                "sample-rate": [q for _, q, _ in self.history],
                "steps": [s for _, _, s in self.history],
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Ledger:
        """Inverse of :meth:`to_record`."""
        entries = zip(
            record["noise-multiplier"], record["sample-rate"], record["steps"], strict=True
        )
        return cls(
            str(record["accountant"]),
            tuple((float(n), float(q), int(s)) for n, q, s in entries),
        )
