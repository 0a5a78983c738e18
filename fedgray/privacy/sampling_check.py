"""Whether a DP-SGD run's batches were Poisson-sampled at the rate its accountant assumed.

The one-run audit reads only the final adapters, and there a sampler that shuffles (each
row exactly once per epoch, fixed batch sizes) moves them about as much as Poisson
sampling does: no canary score tells the two apart. The accountant's amplification by
sampling, though, holds only if every row joins every batch independently with probability
``q``, and the batches a run drew show whether they did: a Poisson batch's size is
Binomial(n, q), so over T batches the dispersion statistic ``sum_t (b_t - nq)^2 / (nq(1-q))``
is close to chi-square with T degrees of freedom. Shuffling's sizes hardly vary (the
statistic falls to about 0); a sampler at another rate than the accountant's pushes it up.
Either tail refutes the assumption.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

Batch = tuple[torch.Tensor, ...]

LEVEL = 1e-6  # a correct sampler fails the check in one run in 10^6 (either tail)


@dataclass
class BatchSizes:
    """Passes the batches of ``stream`` on, keeping each one's size."""

    stream: Iterator[Batch]
    sizes: list[int] = field(default_factory=list)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        batch = next(self.stream)
        self.sizes.append(len(batch[0]))  # per-sample tensors: the first dimension is the batch
        return batch


def poisson_p_value(sizes: list[int], *, rows: int, rate: float) -> float:
    """The two-sided p-value of batch ``sizes`` drawn from ``rows`` rows by Poisson sampling
    at ``rate`` (at rate 1 every batch must hold every row)."""
    if not sizes:
        return 1.0
    if rate >= 1:
        return 1.0 if all(size == rows for size in sizes) else 0.0
    mean, variance = rows * rate, rows * rate * (1 - rate)
    statistic = sum((size - mean) ** 2 for size in sizes) / variance
    # chi-square with T degrees of freedom: its cdf is the regularized lower incomplete gamma
    half = torch.tensor(len(sizes) / 2, dtype=torch.float64)
    at = torch.tensor(statistic / 2, dtype=torch.float64)
    lower, upper = torch.special.gammainc(half, at), torch.special.gammaincc(half, at)
    return float(min(1.0, 2 * min(lower.item(), upper.item())))


@dataclass(frozen=True)
class SamplingCheck:
    """The verdict on a run's batch sizes: their p-value under Poisson sampling at the
    accountant's rate and, below :data:`LEVEL`, the one line saying why they refute it."""

    p_value: float
    refuted: str | None


def check_sampling(sizes: list[int], *, rows: int, rate: float) -> SamplingCheck:
    """Whether ``sizes`` refute Poisson sampling at ``rate``: the p-value, computed once,
    and the refutation every reader (``fedgray audit``, the federated audit) reports."""
    found = poisson_p_value(sizes, rows=rows, rate=rate)
    if found >= LEVEL:
        return SamplingCheck(found, None)
    spread = (sum(s * s for s in sizes) / len(sizes) - (sum(sizes) / len(sizes)) ** 2) ** 0.5
    return SamplingCheck(
        found,
        f"audit: the {len(sizes)} batches drawn are not Poisson-sampled at the accountant's "
        f"rate {rate:.4g} (sizes {sum(sizes) / len(sizes):.1f} ± {spread:.1f}, expected "
        f"{rows * rate:.1f} ± {(rows * rate * (1 - rate)) ** 0.5:.1f}; p = {found:.2g}): the "
        "accountant's amplification by sampling does not hold",
    )
