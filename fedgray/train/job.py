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

    ``zero_shot`` holds the untrained model's test metrics (already logged as step 0);
    ``started`` is the ``time.perf_counter()`` value the run's seconds count from.
    """

    config: Config
    model: AdaptedCLIP
    train: TaskData
    test: TaskData
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
    """A trainer's outcome: final test metrics, the tensors to save, the trained size.

    ``axis`` is the record key that the learning curve is drawn over (``step`` or
    ``queries``); ``privacy``: the final DP accounting (epsilon, delta, noise multiplier,
    sample rate) of a DP-SGD run, else None.
    """

    adapted: dict[str, float]
    state: dict[str, torch.Tensor]
    trainable: int
    axis: str = "step"
    privacy: dict[str, float] | None = None


Trainer = Callable[[Job], Trained]
