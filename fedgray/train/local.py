"""One site's local optimisation: a fixed number of steps over its data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Task

StepCallback = Callable[[int, float], None]


def batches(data: TaskData, *, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless shuffled batches (epoch after epoch), deterministic from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        data.as_dataset(),
        batch_size=min(batch_size, len(data)),
        shuffle=True,
        drop_last=True,
        generator=generator,
    )
    while True:
        yield from loader


@dataclass
class TrainResult:
    """Losses of the steps taken."""

    losses: list[float] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        """Mean loss over the steps (NaN when no step was taken)."""
        return sum(self.losses) / len(self.losses) if self.losses else float("nan")


def train_steps(
    model: torch.nn.Module,
    task: Task,
    data: TaskData,
    stream: Iterator[tuple[torch.Tensor, ...]],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    scale: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
    description: str = "train",
) -> TrainResult:
    """Run ``steps`` optimiser steps of ``task``'s loss on batches drawn from ``stream``."""
    model.train()
    result = TrainResult()
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, leave=False)
    for step in bar:
        loss = task.loss(model, next(stream), data, scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{description}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
        if on_step is not None:
            on_step(step, result.losses[-1])
    return result
