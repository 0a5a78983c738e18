"""DP bugs planted through a test-only seam (monkeypatch) in the Opacus pieces that
:func:`fedgray.privacy.make_private` puts together, so an audited run is the real one (the
one local trainer, Opacus' optimizer, the ledger) with one thing broken, as an
implementation bug would break it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed

from fedgray.privacy import engine
from fedgray.tasks.data import TaskData
from fedgray.train.local import batches


def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    def add_noise(self: DPOptimizer) -> None:
        for p in self.params:
            p.grad = p.summed_grad.view_as(p)
            _mark_as_processed(p.summed_grad)

    monkeypatch.setattr(DPOptimizer, "add_noise", add_noise)


def no_clipping(monkeypatch: pytest.MonkeyPatch) -> None:
    clip = DPOptimizer.clip_and_accumulate

    def unclipped(self: DPOptimizer) -> None:
        bound, self.max_grad_norm = self.max_grad_norm, math.inf  # every clip factor is 1
        try:
            clip(self)
        finally:
            self.max_grad_norm = bound  # the noise keeps its scale

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", unclipped)


def noise_over_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    def add_noise(self: DPOptimizer) -> None:
        size = max(1, len(self.grad_samples[0]))  # the batch drawn, B
        for p in self.params:
            noise = _generate_noise(
                std=self.noise_multiplier * self.max_grad_norm / size,
                reference=p.summed_grad,
                generator=self.generator,
                secure_mode=self.secure_mode,
            )
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    monkeypatch.setattr(DPOptimizer, "add_noise", add_noise)


def shuffling(monkeypatch: pytest.MonkeyPatch) -> None:
    def shuffled(
        data: TaskData, *, sample_rate: float, seed: int, generator: object = None
    ) -> Iterator[tuple[object, ...]]:
        return batches(data, batch_size=max(1, round(sample_rate * len(data))), seed=seed)

    monkeypatch.setattr(engine, "poisson_batches", shuffled)


BUGS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "noise off": no_noise,
    "clipping off": no_clipping,
    "noise std over the batch size": noise_over_the_batch,
}
