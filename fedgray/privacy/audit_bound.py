"""The arithmetic of a one-run privacy audit (Steinke, Nasr and Jagielski, NeurIPS 2023).

``m`` canaries are each included in the training data with probability 1/2, independently.
After training, a guesser names ``r`` of them (the highest scores "in", the lowest "out")
and abstains on the rest; ``v`` of its guesses are right. If training is
(epsilon, delta)-DP, the number of right guesses is dominated by a binomial with success
probability ``e^eps / (1 + e^eps)`` (randomized response at epsilon), up to a term in delta
(their Theorem 3). An outcome that the bound makes unlikely (p-value below ``1 -
confidence``) refutes that epsilon; the largest refuted epsilon is the audit's lower bound.

Everything here is exact arithmetic on binomial tails (log-space sums of probabilities,
no sampling), so the bound is a function of ``(m, r, v, delta, confidence)`` alone.
"""

from __future__ import annotations

import math

BISECTION_STEPS = 40  # on [0, eps_max]: the bound is found to eps_max / 2^40
CONFIDENCE = 0.95  # of the bound, unless an audit says otherwise


def _log_pmf(k: int, n: int, log_p: float, log_q: float) -> float:
    """log P[Binomial(n, p) = k], with ``log_p = log p`` and ``log_q = log(1 - p)``."""
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_choose + k * log_p + (n - k) * log_q


def _logs(epsilon: float) -> tuple[float, float]:
    """log p and log(1 - p) for ``p = e^eps / (1 + e^eps)``, stable for large epsilon."""
    return -math.log1p(math.exp(-epsilon)), -math.log1p(math.exp(epsilon))


def binomial_tail(n: int, k: int, epsilon: float) -> float:
    """P[Binomial(n, p) >= k] with ``p = e^eps / (1 + e^eps)``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = _logs(epsilon)
    terms = [_log_pmf(j, n, log_p, log_q) for j in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """The probability of at least ``correct`` right guesses out of ``guesses`` among
    ``canaries`` if training were (``epsilon``, ``delta``)-DP (Steinke et al., Theorem 3):
    the binomial tail plus ``2 m delta`` times the largest mean mass ``alpha`` of the ``i``
    outcomes just below ``correct``."""
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(
            f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries ({canaries})"
        )
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1] (got {epsilon}, {delta})")
    tail = binomial_tail(guesses, correct, epsilon)
    if delta == 0:
        return tail
    log_p, log_q = _logs(epsilon)
    alpha = mass = 0.0
    for i in range(1, correct + 1):
        mass += math.exp(_log_pmf(correct - i, guesses, log_p, log_q))
        alpha = max(alpha, mass / i)
    return min(1.0, tail + 2 * canaries * delta * alpha)


def epsilon_lower_bound(
    *, canaries: int, guesses: int, correct: int, delta: float, confidence: float = CONFIDENCE
) -> float:
    """The largest epsilon the outcome refutes at ``confidence``: training is not
    (epsilon, ``delta``)-DP for any smaller epsilon, with that confidence. 0 when the outcome
    refutes nothing (no better than chance)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    level = 1 - confidence

    def refuted(epsilon: float) -> bool:
        found = p_value(
            canaries=canaries, guesses=guesses, correct=correct, epsilon=epsilon, delta=delta
        )
        return found < level

    if not refuted(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while refuted(high):  # the p-value grows with epsilon to 1 (or above the level)
        low, high = high, 2 * high
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if refuted(middle) else (low, middle)
    return low


def exceeded(*, lower_bound: float, epsilon: float, delta: float, confidence: float) -> str:
    """The one line of an audit whose bound exceeds the accountant's epsilon."""
    return (
        f"audit: empirical epsilon lower bound {lower_bound:.3f} exceeds the accountant's "
        f"epsilon {epsilon:.3f} (delta {delta:g}, confidence {confidence:g}): DP-SGD leaks "
        "more than it accounts for"
    )
