"""DP bugs planted in the Opacus pieces that :func:`fedgray.privacy.make_private` puts
together, for the audit's power: the audited run is the real one (the one local trainer,
Opacus' optimizer, the ledger) with one thing broken, as an implementation bug would break
it. Each bug takes a ``setattr`` (a test's ``monkeypatch.setattr``, or :func:`planted`'s,
which restores the originals); the library never sees them.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed

from fedgray.privacy import engine
from fedgray.tasks.data import TaskData
from fedgray.train.local import batches

Setter = Callable[[object, str, object], None]


def no_noise(setattr: Setter) -> None:
    def add_noise(self: DPOptimizer) -> None:
        for p in self.params:
            p.grad = p.summed_grad.view_as(p)
            _mark_as_processed(p.summed_grad)

    setattr(DPOptimizer, "add_noise", add_noise)


def no_clipping(setattr: Setter) -> None:
    clip = DPOptimizer.clip_and_accumulate

    def unclipped(self: DPOptimizer) -> None:
        bound, self.max_grad_norm = self.max_grad_norm, math.inf  # every clip factor is 1
        try:
            clip(self)
        finally:
            self.max_grad_norm = bound  # the noise keeps its scale

    setattr(DPOptimizer, "clip_and_accumulate", unclipped)


def noise_over_the_batch(setattr: Setter) -> None:
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

    setattr(DPOptimizer, "add_noise", add_noise)


def shuffling(setattr: Setter) -> None:
    def shuffled(
        data: TaskData, *, sample_rate: float, seed: int, generator: object = None
    ) -> Iterator[tuple[object, ...]]:
        return batches(data, batch_size=max(1, round(sample_rate * len(data))), seed=seed)

    setattr(engine, "poisson_batches", shuffled)


BUGS: dict[str, Callable[[Setter], None]] = {
    "noise off": no_noise,
    "clipping off": no_clipping,
    "noise std over the batch size": noise_over_the_batch,
}
"""The bugs the audit catches (shuffling, :func:`shuffling`, it does not)."""


@contextmanager
def planted(bug: Callable[[Setter], None] | None) -> Iterator[None]:
    """``bug`` planted for the block (nothing for None), the originals restored after it."""
    saved: list[tuple[object, str, object]] = []

    def replace(target: object, name: str, value: object) -> None:
        saved.append((target, name, getattr(target, name)))
        builtins.setattr(target, name, value)

    try:
        if bug is not None:
            bug(replace)
        yield
    finally:
        for target, name, value in reversed(saved):
            builtins.setattr(target, name, value)
