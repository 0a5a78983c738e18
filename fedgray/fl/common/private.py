"""Sample-level DP in the federation: each site's ledger across rounds, budgets, the server's log.

A site keeps its ledger (Opacus accountant history) in ``context.state``, so its epsilon at
round t composes every round it has trained. It reports the ledger with each reply; the
server logs per-site and max epsilon, keeps a copy of every ledger in its checkpoint and
sends the copies with each train message, so that a site whose state was lost (a resumed
run, a restarted process) starts from its full history. A site takes the longer of its own
and the server's copy: a ledger can only over-count, never under-count. The copies hold
public accounting metadata only (noise multiplier, sample rate, step counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedgray.config import PrivacyConfig
from fedgray.privacy import Ledger
from fedgray.privacy.audit_bound import CONFIDENCE, epsilon_lower_bound
from fedgray.privacy.budget import BudgetExhausted

LEDGER = "privacy-ledger"
AUDIT = "audit-"  # prefix of the audited site's counts in its ledger reply
BUDGET_EXHAUSTED = 4401  # Error code of a train reply from a site that refused to train
SITE_REFUSED = 4403  # Error code of a reply from a site whose own floor refused the round


class SiteRefusal(RuntimeError):
    """A deployed site's own floor refuses the round (:mod:`fedgray.fl.clientapp.floor`):
    nothing is trained, or nothing leaves."""


REFUSALS: dict[type[Exception], int] = {
    BudgetExhausted: BUDGET_EXHAUSTED,
    SiteRefusal: SITE_REFUSED,
}
"""A site's refusals -> the Error code its reply carries."""


def ledger_to_record(ledger: Ledger) -> ConfigRecord:
    """A ledger as a Flower ConfigRecord (for ``context.state``, replies and settings)."""
    return ConfigRecord(
        {
            "accountant": ledger.accountant,
            "noise-multiplier": [n for n, _, _ in ledger.history],
            "sample-rate": [q for _, q, _ in ledger.history],
            "steps": [s for _, _, s in ledger.history],
        }
    )


def ledger_from_record(record: ConfigRecord) -> Ledger:
    """Inverse of :func:`ledger_to_record`."""
    noise = cast(list[float], record["noise-multiplier"])  # as ledger_to_record writes them
    rates = cast(list[float], record["sample-rate"])
    steps = cast(list[int], record["steps"])
    entries = zip(noise, rates, steps, strict=True)
    return Ledger(
        str(record["accountant"]),
        tuple((float(n), float(q), int(s)) for n, q, s in entries),
    )


def _prefix(partition_id: int) -> str:
    return f"{LEDGER}-{partition_id}-"


def site_ledger(
    state: RecordDict, settings: ConfigRecord, privacy: PrivacyConfig, *, partition_id: int
) -> Ledger:
    """The site's ledger: its own (``context.state``) or the server's copy, whichever is longer."""
    candidates = [Ledger(privacy.accountant)]
    if LEDGER in state:
        candidates.append(ledger_from_record(cast(ConfigRecord, state[LEDGER])))
    prefix = _prefix(partition_id)
    copied = {k[len(prefix) :]: v for k, v in settings.items() if k.startswith(prefix)}
    if copied:
        candidates.append(ledger_from_record(ConfigRecord(copied)))
    ledger = max(candidates, key=lambda c: c.steps)
    if ledger.accountant != privacy.accountant:
        raise ValueError(
            f"site {partition_id}: its ledger uses the '{ledger.accountant}' accountant, "
            f"the config says '{privacy.accountant}'"
        )
    return ledger


def ledger_reply(
    ledger: Ledger,
    *,
    partition_id: int,
    epsilon: float,
    audit: Mapping[str, int | float | str] | None = None,
) -> ConfigRecord:
    """What a site sends back about its privacy: its ledger, partition id and epsilon, and
    under ``privacy.audit`` the audited site's evidence after its last round (how many
    canaries, guesses and right guesses, how many batches it drew and their p-value under
    Poisson sampling, and why they refute it if they do: no canary, score, membership or
    batch size leaves the site)."""
    record = ledger_to_record(ledger)
    record["site"] = partition_id
    record["epsilon"] = epsilon
    record.update(audit or {})
    return record


def refusal_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod (outermost): a site that refuses to train (its budget, its floor) replies
    with an error (:data:`REFUSALS`) naming why, whatever mods sit inside."""
    try:
        return call_next(msg, context)
    except tuple(REFUSALS) as refusal:
        code = next(c for kind, c in REFUSALS.items() if isinstance(refusal, kind))
        return Message(Error(code=code, reason=str(refusal)), reply_to=msg)


def site_reports(replies: list[Message]) -> tuple[list[ConfigRecord], list[str]]:
    """The ledgers in a round's train replies, and the reasons of the sites that refused."""
    ledgers = [
        cast(ConfigRecord, m.content[LEDGER])  # as ledger_reply makes it
        for m in replies
        if not m.has_error() and LEDGER in m.content
    ]
    refusals = [
        cast(str, m.error.reason)  # refusal_mod always gives one
        for m in replies
        if m.has_error() and m.error.code == BUDGET_EXHAUSTED
    ]
    return ledgers, refusals


@dataclass
class PrivacyLog:
    """The server's view: every site's latest ledger and reported epsilon."""

    privacy: PrivacyConfig
    ledgers: dict[int, Ledger] = field(default_factory=dict)
    epsilons: dict[int, float] = field(default_factory=dict)

    def settings(self) -> ConfigRecord:
        """The ledger copies to send with a train message."""
        entries: dict[str, Any] = {}
        for site, ledger in sorted(self.ledgers.items()):
            entries.update({_prefix(site) + k: v for k, v in ledger_to_record(ledger).items()})
        return ConfigRecord(entries)

    def update(self, ledgers: list[ConfigRecord], refusals: list[str]) -> dict[str, Any]:
        """Take in a round's reported ledgers and refusals; its record for metrics.jsonl."""
        audit = None
        for record in ledgers:
            site = int(cast(int, record["site"]))  # as ledger_reply writes them
            self.ledgers[site] = ledger_from_record(record)
            self.epsilons[site] = float(cast(float, record["epsilon"]))
            if f"{AUDIT}correct" in record:
                audit = self._audit(site, record)
        return {
            "delta": self.privacy.delta,
            "accountant": self.privacy.accountant,
            "epsilon": {str(s): e for s, e in sorted(self.epsilons.items())},
            "max_epsilon": max(self.epsilons.values(), default=0.0),
            "budget_refusals": list(refusals),
        } | ({"audit": audit} if audit is not None else {})

    def _audit(self, site: int, record: ConfigRecord) -> dict[str, Any]:
        """The audited site's bound beside its epsilon, and its sampler check (for
        metrics.jsonl and the report); ``sampling``: why its batches refute Poisson
        sampling at the accountant's rate, or None."""
        counts = {k: int(cast(int, record[AUDIT + k])) for k in ("canaries", "guesses", "correct")}
        bound = epsilon_lower_bound(**counts, delta=self.privacy.delta, confidence=CONFIDENCE)
        epsilon = self.epsilons[site]
        refuted = record.get(AUDIT + "sampling")
        sampling = str(refuted) if refuted is not None else None
        return {
            "site": site,
            **counts,
            "confidence": CONFIDENCE,
            "lower_bound": bound,
            "epsilon": epsilon,
            "batches": int(cast(int, record[AUDIT + "batches"])),
            "sampling_p_value": float(cast(float, record[AUDIT + "sampling-p"])),
            "sampling": sampling,
            "passed": bound <= epsilon and sampling is None,
        }

    def state(self) -> dict[str, Any]:
        """Plain data for the checkpoint."""
        return {
            str(site): {
                "accountant": ledger.accountant,
                "history": [list(entry) for entry in ledger.history],
                "epsilon": self.epsilons[site],
            }
            for site, ledger in self.ledgers.items()
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        for site, entry in state.items():
            history = tuple((float(n), float(q), int(s)) for n, q, s in entry["history"])
            self.ledgers[int(site)] = Ledger(entry["accountant"], history)
            self.epsilons[int(site)] = float(entry["epsilon"])


def audit_line(audit: dict[str, Any]) -> str:
    """``audit at site 0: 61 of 100 guesses right (1000 canaries), empirical epsilon >=
    0.000 (95% confidence) beside the accountant's 0.996; its 30 batches against Poisson
    sampling at the accountant's rate: p = 0.41``."""
    return (
        f"audit at site {audit['site']}: {audit['correct']} of {audit['guesses']} guesses right "
        f"({audit['canaries']} canaries), empirical epsilon >= {audit['lower_bound']:.3f} "
        f"({audit['confidence']:.0%} confidence) beside the accountant's {audit['epsilon']:.3f}"
        f"; its {audit['batches']} batches against Poisson sampling at the accountant's rate: "
        f"p = {audit['sampling_p_value']:.2g}"
    )
