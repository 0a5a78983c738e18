"""The one-run audit's arithmetic: binomial tails, Theorem 3's p-value, the epsilon bound."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom

from fedgray.privacy.audit_bound import binomial_tail, epsilon_lower_bound, p_value


def _all_right(guesses: int, confidence: float) -> float:
    """Closed form at delta 0 when every guess is right: the p-value is q^r, so the bound
    is the epsilon of randomized response with accuracy q = (1 - confidence)^(1/r)."""
    q = (1 - confidence) ** (1 / guesses)
    return math.log(q / (1 - q))


@pytest.mark.parametrize(("n", "k", "epsilon"), [(10, 7, 0.0), (100, 80, 1.0), (1000, 990, 4.0)])
def test_binomial_tail_is_scipys(n: int, k: int, epsilon: float) -> None:
    p = math.exp(epsilon) / (1 + math.exp(epsilon))
    assert binomial_tail(n, k, epsilon) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-9)


@pytest.mark.parametrize("guesses", [10, 100, 1000])
def test_with_every_guess_right_the_bound_is_the_closed_form(guesses: int) -> None:
    bound = epsilon_lower_bound(canaries=1000, guesses=guesses, correct=guesses, delta=0.0)
    assert bound == pytest.approx(_all_right(guesses, 0.95), abs=1e-6)


def test_with_every_guess_right_the_bound_grows_with_the_guesses() -> None:
    bounds = [
        epsilon_lower_bound(canaries=1000, guesses=r, correct=r, delta=0.0)
        for r in (10, 50, 100, 500, 1000)
    ]
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1]
    # The most 100 and 1000 right guesses can show at 95%: 3.49 and 5.81.
    assert bounds[2] == pytest.approx(3.493, abs=1e-3)
    assert bounds[4] == pytest.approx(5.809, abs=1e-3)
    # Theorem 3's delta term of 1000 canaries at delta 1e-5 costs a little of it.
    with_delta = epsilon_lower_bound(canaries=1000, guesses=1000, correct=1000, delta=1e-5)
    assert bounds[4] - 0.05 < with_delta < bounds[4]


def test_the_delta_term_is_theorem_3s() -> None:
    # m = 10, r = v = 2 at epsilon 0: tail P[B(2, 1/2) >= 2] = 1/4; alpha = max(P[B = 1] / 1,
    # P[0 <= B < 2] / 2) = max(1/2, 3/8) = 1/2; p = 1/4 + 2 * 10 * delta * 1/2.
    found = p_value(canaries=10, guesses=2, correct=2, epsilon=0.0, delta=0.01)
    assert found == pytest.approx(0.25 + 0.1)
    assert p_value(canaries=10, guesses=2, correct=2, epsilon=0.0, delta=0.0) == 0.25


def test_the_bound_sits_where_the_p_value_crosses_one_minus_the_confidence() -> None:
    args = {"canaries": 1000, "guesses": 200, "correct": 170, "delta": 1e-5}
    bound = epsilon_lower_bound(**args, confidence=0.95)
    assert 0 < bound
    assert p_value(**args, epsilon=bound) < 0.05 <= p_value(**args, epsilon=bound + 1e-6)
    looser = epsilon_lower_bound(**args, confidence=0.8)
    assert looser > bound  # less confidence refutes more


def test_a_guesser_at_chance_shows_nothing() -> None:
    assert epsilon_lower_bound(canaries=1000, guesses=100, correct=50, delta=1e-5) == 0.0
    assert epsilon_lower_bound(canaries=1000, guesses=100, correct=0, delta=1e-5) == 0.0


def test_randomized_response_at_epsilon_one_is_rarely_bounded_above_one() -> None:
    """The bound's guarantee, by the mechanism it is built on: guesses right with
    probability e / (1 + e) (1-DP randomized response) refute epsilon 1 in at most 5% of
    audits at 95% confidence."""
    generator = torch.Generator().manual_seed(0)
    accuracy = math.e / (1 + math.e)
    trials, guesses = 400, 100
    right = (torch.rand(trials, guesses, generator=generator) < accuracy).sum(dim=1)
    bounds = [
        epsilon_lower_bound(canaries=1000, guesses=guesses, correct=int(v), delta=0.0)
        for v in right
    ]
    assert sum(b > 1.0 for b in bounds) <= 0.05 * trials
    assert max(bounds) > 0.5  # the audits are not vacuous: some come close


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"canaries": 10, "guesses": 11, "correct": 5}, "guesses"),
        ({"canaries": 10, "guesses": 5, "correct": 6}, "correct"),
    ],
)
def test_impossible_outcomes_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p_value(**kwargs, epsilon=1.0, delta=0.0)
