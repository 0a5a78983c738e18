"""What ``fedgray adapt`` hands a trainer, and what a trainer hands back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedgray.adapters.model import AdaptedCLIP
from fedgray.config import Config
from fedgray.runs import RunFolder
from fedgray.tasks.data import TaskData


@dataclass(frozen=True)
class Job:
    """One single-site adaptation: the built model, the site's data, its run folder.

    ``validation`` is the split every logged figure (the learning curve) is scored on: the
    test split is read once, by ``fedgray adapt`` after training, never by a trainer.
    ``zero_shot`` holds the untrained model's validation metrics (already logged as step
    0); ``started`` is the ``time.perf_counter()`` value the run's seconds count from.
    """

    config: Config
    model: AdaptedCLIP
    train: TaskData
    validation: TaskData
    run: RunFolder
    zero_shot: dict[str, float]
    started: float
    progress: bool
    echo: Callable[[str], None]

    def header(self, details: str) -> None:
        """Echo the run's first line: method, dataset, access level, then ``details``."""
        config, level = self.config, self.model.backbone.level.value
        self.echo(f"{config.method.name} on {config.data.dataset} at level {level}: {details}")


@dataclass(frozen=True)
class Trained:
    """A trainer's outcome: the returned model's validation metrics, how to score it on
    other data, the tensors to save, the trained size.

    ``score`` is what ``fedgray adapt`` reads the test split with, once, after training
    (the trainer never sees it). ``axis`` is the record key that the learning curve is
    drawn over (``step`` or ``queries``); ``privacy``: the final DP accounting (epsilon,
    delta, noise multiplier, sample rate) of a DP-SGD run, else None.
    """

    validation: dict[str, float]
    score: Callable[[TaskData], dict[str, float]]
    state: dict[str, torch.Tensor]
    trainable: int
    axis: str = "step"
    privacy: dict[str, float] | None = None


Trainer = Callable[[Job], Trained]
