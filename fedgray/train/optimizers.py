"""``train.optimizer``: what steps the trained modules, in ``fedgray adapt`` and at sites.

``adamw`` (the default) normalises each coordinate by its own running gradient scale.
Under DP-SGD most coordinates of a noised mean gradient are noise, which that scaling
lifts to the full step size; ``sgd`` (momentum 0.9) keeps the step proportional to the
noised gradient, so noise stays the fraction of the step it is of the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Groups = list[dict[str, Any]]

OPTIMIZERS: dict[str, Callable[[Groups, float], torch.optim.Optimizer]] = {
    "adamw": lambda groups, decay: torch.optim.AdamW(groups, weight_decay=decay),
    "sgd": lambda groups, decay: torch.optim.SGD(groups, momentum=0.9, weight_decay=decay),
}
"""``train.optimizer`` -> the optimizer over parameter groups (each with its ``lr``) and
``train.weight_decay``."""
