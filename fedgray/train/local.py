"""One site's local optimisation: a fixed number of steps over its data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Task

StepCallback = Callable[[int, float], None]


def batches(data: TaskData, *, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless shuffled batches (epoch after epoch), deterministic from ``seed``.

    The order is a ``DataLoader``'s (shuffled, last partial batch dropped); each batch is
    gathered by one index per tensor, on whatever device the data lives.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = data.as_dataset().tensors
    loader = DataLoader(
        TensorDataset(torch.arange(len(data))),  # batches of indices
        batch_size=min(batch_size, len(data)),
        shuffle=True,
        drop_last=True,
        generator=generator,
    )
    while True:
        for (index,) in loader:
            on_device = index.to(data.images.device)
            yield tuple(t[on_device] for t in tensors)


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
    autocast: AbstractContextManager[object] | None = None,
) -> TrainResult:
    """Run ``steps`` optimiser steps of ``task``'s loss on batches drawn from ``stream``,
    the forward passes under ``autocast`` (see :func:`fedgray.devices.autocast`)."""
    model.train()
    autocast = autocast or contextlib.nullcontext()
    result = TrainResult()
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, leave=False)
    for step in bar:
        with autocast:
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
