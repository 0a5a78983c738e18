"""What choosing a private recipe from a fixed grid costs the sites.

Trying ``k`` recipes on the sites' data and keeping the best one is itself a private
computation (Papernot and Steinke, ICLR 2022): the winner depends on every trial. fedgray
runs the grid under a split budget, each trial at ``(epsilon / k, delta / k)``, so that by
basic composition the whole selection is ``(epsilon, delta)``-DP for every site whatever
picks the winner; the winner is picked on the server's validation split, which holds no
site's data, so the choice is post-processing of the trials' releases.

The ledger of the selection charges each site every trial's steps, composed by one
accountant over all of them: the figure a site can check from its own ledgers, usually
well below the target that basic composition guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fedgray.privacy.ledger import Ledger


def split_budget(epsilon: float, delta: float, trials: int) -> tuple[float, float]:
    """Each trial's ``(epsilon, delta)`` when ``trials`` share ``(epsilon, delta)``
    (``inf``: no privacy to share)."""
    if trials < 1:
        raise ValueError(f"a grid needs at least one trial, got {trials}")
    return (epsilon if math.isinf(epsilon) else epsilon / trials), delta / trials


def joined(ledgers: Sequence[Ledger]) -> Ledger:
    """One site's ledgers of several trials as a single ledger: all their steps, composed
    by one accountant (they must use the same kind)."""
    kinds = {ledger.accountant for ledger in ledgers}
    if len(kinds) != 1:
        raise ValueError(f"trials composed by different accountants: {sorted(kinds)}")
    return Ledger(kinds.pop(), tuple(entry for ledger in ledgers for entry in ledger.history))


def selection_cost(trials: Sequence[Mapping[int, Ledger]], *, delta: float) -> dict[int, float]:
    """Epsilon at ``delta`` that the whole grid cost each site (site -> epsilon), from every
    trial's ledgers (site -> ledger; a site missing from a trial did not train in it)."""
    sites = sorted({site for trial in trials for site in trial})
    return {
        site: joined([trial[site] for trial in trials if site in trial]).epsilon(delta)
        for site in sites
    }
