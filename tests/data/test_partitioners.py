"""Tests for the partitioners: disjoint cover, determinism, skew and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedgray.data.partitioners import PARTITIONERS, by_group, dirichlet, iid


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    merged = np.concatenate(parts)
    assert len(merged) == n and np.array_equal(np.sort(merged), np.arange(n))
    assert all(len(p) > 0 and np.array_equal(p, np.sort(p)) for p in parts)


def _mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    entropies = []
    for part in parts:
        share = np.bincount(labels[part], minlength=labels.max() + 1) / len(part)
        share = share[share > 0]
        entropies.append(-(share * np.log(share)).sum())
    return float(np.mean(entropies))


LABELS = np.random.default_rng(0).integers(0, 10, 2000)


def test_registry_names() -> None:
    assert PARTITIONERS == {"iid": iid, "dirichlet": dirichlet, "by_group": by_group}


def test_iid() -> None:
    parts = iid(103, num_partitions=4, seed=0)
    _assert_disjoint_cover(parts, 103)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert all(
        np.array_equal(a, b) for a, b in zip(parts, iid(103, num_partitions=4, seed=0), strict=True)
    )
    assert not np.array_equal(parts[0], iid(103, num_partitions=4, seed=1)[0])


def test_dirichlet_cover_determinism_and_min_size() -> None:
    parts = dirichlet(LABELS, num_partitions=8, alpha=0.3, seed=0, min_size=50)
    _assert_disjoint_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 50
    again = dirichlet(LABELS, num_partitions=8, alpha=0.3, seed=0, min_size=50)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet(LABELS, num_partitions=8, alpha=0.3, seed=1, min_size=50)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    entropy = {
        alpha: _mean_label_entropy(
            dirichlet(LABELS, num_partitions=10, alpha=alpha, seed=0), LABELS
        )
        for alpha in (0.1, 100.0)
    }
    assert entropy[0.1] < 0.6 * entropy[100.0]
    assert entropy[100.0] > 0.95 * np.log(10)


def test_by_group_one_group_per_partition() -> None:
    groups = ["sketch"] * 6 + ["photo"] * 4 + ["noisy"] * 5
    parts = by_group(groups, num_partitions=3)
    _assert_disjoint_cover(parts, len(groups))
    assert [sorted({groups[i] for i in p}) for p in parts] == [["sketch"], ["photo"], ["noisy"]]


def test_by_group_round_robin_splits_groups() -> None:
    groups = np.array(["a", "b"] * 10)
    parts = by_group(groups, num_partitions=5)
    _assert_disjoint_cover(parts, 20)
    assert [groups[p[0]] for p in parts] == ["a", "b", "a", "b", "a"]
    assert [len(p) for p in parts] == [4, 5, 3, 5, 3]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid(10, num_partitions=0, seed=0), "num_partitions must be >= 1"),
        (lambda: iid(3, num_partitions=4, seed=0), "cannot split 3 samples into 4"),
        (lambda: dirichlet(LABELS, num_partitions=4, alpha=0.0, seed=0), "alpha must be > 0"),
        (lambda: dirichlet(LABELS[:30], num_partitions=4, alpha=1.0, seed=0), "min_size=10"),
        (lambda: dirichlet(LABELS[:40], num_partitions=4, alpha=0.01, seed=0), "no Dirichlet"),
        (lambda: by_group(["a", "b", "c"], num_partitions=2), "3 groups, 2 partitions"),
        (lambda: by_group(["a", "b", "b", "b"], num_partitions=4), "group 'a' has 1 samples"),
    ],
)
def test_bad_arguments(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
