"""The sampler check of the audit: Poisson batches pass it, shuffled batches and batches at
another rate than the accountant's do not.

Batches come from the sampler DP-SGD steps over (:func:`fedgray.privacy.engine.poisson_batches`,
Opacus' DPDataLoader) and from the shuffling loader that a bug could put in its place
(:func:`fedgray.train.local.batches`), over a site's worth of rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from fedgray.backbone import SealedBackbone
from fedgray.privacy.engine import poisson_batches
from fedgray.privacy.sampling_check import LEVEL, BatchSizes, check_sampling, poisson_p_value
from fedgray.tasks.data import TaskData
from fedgray.train.local import batches
from tests.helpers import captioned_data

ROWS, RATE, STEPS = 120, 0.3, 200


@pytest.fixture
def rows(micro: SealedBackbone) -> TaskData:
    return captioned_data(micro, n=ROWS)


def _sizes(stream: Iterator[tuple[torch.Tensor, ...]]) -> list[int]:
    drawn = BatchSizes(stream)
    for _ in itertools.islice(drawn, STEPS):
        pass
    return drawn.sizes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_batches_at_the_accountants_rate_pass(rows: TaskData, seed: int) -> None:
    sizes = _sizes(poisson_batches(rows, sample_rate=RATE, seed=seed))
    assert len(set(sizes)) > 5  # sizes vary, as Binomial(120, 0.3)'s do
    verdict = check_sampling(sizes, rows=ROWS, rate=RATE)
    assert verdict.p_value > 0.001 and verdict.refuted is None


def test_shuffled_batches_of_the_same_mean_size_are_refuted(rows: TaskData) -> None:
    sizes = _sizes(batches(rows, batch_size=round(RATE * ROWS), seed=0))
    assert abs(sum(sizes) / len(sizes) - RATE * ROWS) < 1  # the mean alone would pass
    verdict = check_sampling(sizes, rows=ROWS, rate=RATE)
    assert verdict.p_value == poisson_p_value(sizes, rows=ROWS, rate=RATE) < LEVEL
    reason = verdict.refuted
    assert reason is not None and "not Poisson-sampled" in reason and "\n" not in reason


def test_poisson_batches_at_another_rate_than_the_accountants_are_refuted(
    rows: TaskData,
) -> None:
    sizes = _sizes(poisson_batches(rows, sample_rate=0.4, seed=0))
    assert poisson_p_value(sizes, rows=ROWS, rate=RATE) < LEVEL


def test_at_rate_one_every_batch_must_hold_every_row() -> None:
    assert poisson_p_value([ROWS] * 5, rows=ROWS, rate=1.0) == 1.0
    assert poisson_p_value([ROWS] * 4 + [ROWS - 1], rows=ROWS, rate=1.0) == 0.0
