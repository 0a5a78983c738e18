"""Split sample indices among federated clients.

Every partitioner returns one sorted ``int64`` index array per partition; together they are
disjoint and cover ``0 .. n - 1``. Seeded partitioners are deterministic from ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

MAX_DIRICHLET_DRAWS = 1000


def _check_count(n: int, num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if num_partitions > n:
        raise ValueError(f"cannot split {n} samples into {num_partitions} non-empty partitions")


def iid(n: int, *, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``n`` indices and cut them into ``num_partitions`` near-equal parts."""
    _check_count(n, num_partitions)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet(
    labels: Sequence[int] | np.ndarray,
    *,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Label-skewed split: each class is shared out by proportions drawn from Dir(``alpha``).

    Small ``alpha`` gives each partition few classes; large ``alpha`` approaches an IID split.
    Proportions are redrawn until every partition holds at least ``min_size`` samples.
    """
    labels = np.asarray(labels)
    n = len(labels)
    _check_count(n, num_partitions)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size < 0 or min_size * num_partitions > n:
        raise ValueError(
            f"min_size={min_size} per partition is impossible for {n} samples "
            f"in {num_partitions} partitions"
        )
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for members in by_class:
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for part, chunk in zip(parts, np.split(members, cuts), strict=True):
                part.append(chunk)
        result = [np.sort(np.concatenate(part)) for part in parts]
        if min(len(part) for part in result) >= min_size:
            return result
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {MAX_DIRICHLET_DRAWS} gave every one of "
        f"{num_partitions} partitions {min_size} samples; lower min_size or raise alpha"
    )


def by_group(groups: Sequence[Hashable] | np.ndarray, *, num_partitions: int) -> list[np.ndarray]:
    """One group (e.g. a domain) per partition, groups in order of first appearance.

    With more partitions than groups, partition ``p`` takes group ``p % num_groups`` and a
    group's samples are cut into contiguous near-equal parts among its partitions.
    """
    keys = list(groups)
    names = list(dict.fromkeys(keys))
    _check_count(len(keys), num_partitions)
    if num_partitions < len(names):
        raise ValueError(
            f"by_group needs at least one partition per group: {len(names)} groups, "
            f"{num_partitions} partitions"
        )
    slot = {name: g for g, name in enumerate(names)}
    codes = np.array([slot[key] for key in keys], dtype=np.int64)
    result: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_partitions
    for g, name in enumerate(names):
        owners = list(range(g, num_partitions, len(names)))
        members = np.flatnonzero(codes == g)
        if len(members) < len(owners):
            raise ValueError(
                f"group {name!r} has {len(members)} samples for {len(owners)} partitions"
            )
        for owner, part in zip(owners, np.array_split(members, len(owners)), strict=True):
            result[owner] = part
    return result


PARTITIONERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "iid": iid,
    "dirichlet": dirichlet,
    "by_group": by_group,
}
