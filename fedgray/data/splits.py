"""Seeded, stratified train / validation / test splits of a labelled pool.

The validation split is always cut from the training pool, never from test: what a run
chooses on it (the round it keeps, a recipe) then says nothing about the test figure it
reports.
"""

from __future__ import annotations

import numpy as np

VALIDATION_FRACTION = 0.1  # of the training pool, per class, for every real dataset


def stratified_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into shuffled (train, test) with ``test_fraction`` of every class."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(test_fraction * len(members))
        test.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def carve_validation(
    labels: np.ndarray, pool: np.ndarray, *, seed: int, fraction: float = VALIDATION_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Split the training ``pool`` (indices into ``labels``) into shuffled (train,
    validation), ``fraction`` of every class to validation, seeded by ``seed``."""
    train, validation = stratified_split(labels[pool], test_fraction=fraction, seed=seed + 1)
    return pool[train], pool[validation]


def three_way_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a pool without an official split: ``test_fraction`` of every class to
    test, then :data:`VALIDATION_FRACTION` of the rest to validation, the rest to train."""
    pool, test = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    train, validation = carve_validation(labels, pool, seed=seed)
    return {"train": train, "validation": validation, "test": test}
