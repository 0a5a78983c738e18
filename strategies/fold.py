"""A weighted mean built one reply at a time, so a server never holds every site's update.

Flower's FedAvg family averages a list of replies: with 1,000 sites training in a round,
the server holds 1,000 copies of the adapters before it adds them up. :class:`MeanFold`
adds each reply's arrays into a running sum as it arrives, and the reply's arrays can then
be let go: the server holds one running sum whatever the number of sites.

The sum is kept in float64 with Neumaier's compensation. A weight times a float32 value is
exact in float64 (weights are example counts), and the compensated sum is accurate to
about 2^-100 of the total, so the mean, rounded to the adapters' dtype, is the same for
any arrival order unless the exact mean lies within that distance of a rounding boundary:
seeded runs stay reproducible although replies arrive in a different order every run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict


class MeanFold:
    """``sum(w_i * x_i) / sum(w_i)`` over the arrays added so far, key by key."""

    def __init__(self) -> None:
        self.total = 0.0
        self._sum: dict[str, np.ndarray] = {}
        self._error: dict[str, np.ndarray] = {}

    def add(self, arrays: ArrayRecord, weight: float) -> None:
        """Fold ``weight * arrays`` into the sum (the arrays are not kept)."""
        for key, array in arrays.items():
            term = array.numpy().astype(np.float64) * weight
            if key not in self._sum:
                self._sum[key], self._error[key] = term, np.zeros_like(term)
                continue
            total = self._sum[key] + term
            bigger = np.abs(self._sum[key]) >= np.abs(term)
            lost = np.where(
                bigger, (self._sum[key] - total) + term, (term - total) + self._sum[key]
            )
            self._error[key] += lost
            self._sum[key] = total
        self.total += weight

    def mean(self, dtypes: Mapping[str, str | np.dtype]) -> ArrayRecord:
        """The weighted mean, each array cast to ``dtypes[key]``; raises ValueError when
        nothing (or only weight 0) was added."""
        if self.total <= 0:
            raise ValueError("no weight to average")
        return ArrayRecord(
            {
                key: Array(np.asarray((total + self._error[key]) / self.total, dtypes[key]))
                for key, total in self._sum.items()
            }
        )


def arrays_in(content: RecordDict) -> dict[str, ArrayRecord]:
    """``content``'s ArrayRecords by key. Not ``content.array_records``: every read of that
    builds a view that sits in a reference cycle and keeps the records alive until the
    garbage collector runs, so an update the server has let go would linger."""
    return {key: value for key, value in content.items() if isinstance(value, ArrayRecord)}
