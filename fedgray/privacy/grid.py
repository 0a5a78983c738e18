"""What choosing a private recipe from a fixed grid costs the sites, and how it is paid.

Trying ``k`` recipes on the sites' data and keeping the best one is itself a private
computation (Papernot and Steinke, ICLR 2022): the winner depends on every trial. The
winner is picked on the server's validation split, which holds no site's data, so what
the grid releases (every trial's updates, the choice, the winner's adapters) is
post-processing of the trials' releases, and a site's cost is its ledgers of all the
trials composed by one accountant.

fedgray calibrates the grid to that cost: every trial gets the same epsilon, the largest
with which each site's composed ledger stays within the target
(:func:`trial_epsilon`). Splitting the target by basic composition instead, each trial at
``(epsilon / k, delta / k)``, holds too but leaves most of the budget unspent: four MNIST
trials at epsilon 2 each composed to 4.03, not 8, under the PRV accountant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedgray.privacy.engine import calibrated_noise
from fedgray.privacy.ledger import Ledger

SitePlans = Mapping[int, tuple[float, int]]
"""One trial's plan: each site's Poisson sample rate and the steps it plans."""
TOLERANCE = 0.01  # relative: the trial epsilon found is within 1% of the largest that holds


def trial_ledger(
    epsilon: float, delta: float, trials: Sequence[SitePlans], *, site: int, accountant: str
) -> Ledger:
    """Site ``site``'s ledger over every trial it trains in, each trial's noise calibrated to
    ``epsilon`` at ``delta`` for the site's sample rate and steps (as its run calibrates it)."""
    entries = (
        (calibrated_noise(epsilon, delta, rate, steps, accountant), rate, steps)
        for rate, steps in (trial[site] for trial in trials if site in trial)
    )
    return Ledger(accountant, tuple(entries))


def trial_epsilon(
    target: float, delta: float, trials: Sequence[SitePlans], *, accountant: str
) -> float:
    """The epsilon each trial is calibrated to (at ``delta``) so that every site's ledger over
    all ``trials``, composed by ``accountant``, stays within ``target`` at ``delta``: the
    largest within :data:`TOLERANCE`, by bisection."""
    if not trials:
        raise ValueError("a grid needs at least one trial")
    sites = sorted({site for trial in trials for site in trial})

    def cost(epsilon: float) -> float:
        ledgers = {
            trial_ledger(epsilon, delta, trials, site=site, accountant=accountant) for site in sites
        }  # sites alike in size share one ledger
        return max(ledger.epsilon(delta) for ledger in ledgers)

    if cost(target) <= target:
        return target  # one trial, or sites that each train in one
    low, high = target / len(trials), target
    while cost(low) > target:  # the calibration's own slack can exceed basic composition's
        low, high = low / 2, low
    while high - low > TOLERANCE * high:
        middle = (low + high) / 2
        low, high = (middle, high) if cost(middle) <= target else (low, middle)
    return low


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
