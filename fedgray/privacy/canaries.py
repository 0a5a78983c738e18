"""Canaries for the one-run audit: made, drawn in or out, scored.

Two kinds, both ordinary training rows that pass through the per-sample objective, Opacus'
per-sample gradients, clipping, Poisson sampling, noise and the accountant:

- ``input``: real training images of the site, each given another label and a caption
  that is not its own (mislabelled examples, as Steinke et al. use); what any method
  trains on. Weak where the backbone maps images close together (a random backbone).
- ``feature``: where DP-SGD steps over cached backbone features
  (``privacy.cache_features``), those features are the mechanism's input, so a canary
  may be a feature vector itself: a random direction of the feature space at the real
  features' mean norm, with a random caption and label. DP-SGD's guarantee is claimed for
  any rows it steps over, so it must hold for a vector no image produces, and a random
  direction is a hard case for it: far from every real image's features.

Gradient canaries (a vector written straight into the per-sample gradients) would be
stronger still but skip the objective and the grad samplers, where a sample's influence
can leak past its clip (a loss that is not per-sample, a wrong gradient formula).

The score is how much training lowered the canary's per-sample loss: a member's loss is
what the gradient steps pushed down, a non-member's moves only with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from fedgray.config_schema import ConfigError
from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Task

PER_SAMPLE = ("images", "tokens", "caption_ids", "labels")  # TaskData's per-sample fields


def _relabelled(data: TaskData, rows: torch.Tensor, generator: torch.Generator) -> TaskData:
    """``data``'s ``rows`` with random other labels and captions that are not their own: a
    random other public caption where the data has them, else the prompt of the new label.
    Caption ids number the rows ``0..n-1`` (each its own caption)."""
    count, classes = len(rows), max(data.num_classes, 2)
    labels = (
        data.labels[rows] + torch.randint(1, classes, (count,), generator=generator)
    ) % classes
    if data.public_tokens is not None:
        pool = data.public_tokens
        own = (data.tokens[rows][:, None, :] == pool[None, :, :]).all(dim=-1)
        weights = (~own).float() + 1e-12  # never its own caption (unless there is no other)
        tokens = pool[torch.multinomial(weights, 1, generator=generator).flatten()]
    else:
        first = {int(c): i for i, c in reversed(list(enumerate(data.prompt_classes)))}
        tokens = data.prompt_tokens[[first[int(label)] for label in labels]]
    return replace(
        data,
        images=data.images[rows],
        tokens=tokens.to(data.tokens.device),
        caption_ids=torch.arange(count, device=data.caption_ids.device),
        labels=labels.to(data.labels.device),
    )


def input_canaries(
    data: TaskData, *, count: int, generator: torch.Generator
) -> tuple[TaskData, TaskData]:
    """``count`` of ``data``'s examples, relabelled, as canaries; the rest of ``data``."""
    if not 1 <= count < len(data):
        raise ConfigError(
            f"--canaries: must be in [1, {len(data) - 1}] with input canaries (taken from the "
            f"site's {len(data)} training examples, one kept at least; got {count})"
        )
    order = torch.randperm(len(data), generator=generator)
    return _relabelled(data, order[:count], generator), data.subset(order[count:])


def feature_canaries(
    features: TaskData, *, count: int, generator: torch.Generator
) -> tuple[TaskData, TaskData]:
    """``count`` feature canaries in the space of ``features`` (cached backbone features,
    as the images of a :class:`TaskData`), and ``features`` unchanged."""
    real = features.images
    directions = torch.randn((count, *real.shape[1:]), generator=generator, dtype=real.dtype)
    norm = real.flatten(1).norm(dim=1).mean()
    vectors = directions / directions.flatten(1).norm(dim=1).view(-1, *[1] * (real.dim() - 1))
    rows = torch.randint(len(features), (count,), generator=generator)
    canaries = replace(_relabelled(features, rows, generator), images=(vectors * norm).to(real))
    return canaries, features


CanaryKind = Callable[..., tuple[TaskData, TaskData]]
CANARY_KINDS: dict[str, CanaryKind] = {"input": input_canaries, "feature": feature_canaries}
"""``--canary`` -> how canaries are made: from the images, or in the backbone's feature
space (DP-SGD on cached features only)."""


def draw_members(count: int, *, generator: torch.Generator) -> torch.Tensor:
    """Which canaries join the training data: each independently with probability 1/2."""
    return torch.rand(count, generator=generator) < 0.5


def selected(data: TaskData, keep: torch.Tensor) -> TaskData:
    """The rows of ``data`` where ``keep`` holds, caption ids unchanged."""
    return replace(data, **{name: getattr(data, name)[keep] for name in PER_SAMPLE})


def joined(data: TaskData, rows: TaskData) -> TaskData:
    """``data`` followed by ``rows`` (their caption ids after ``data``'s); prompts and
    public captions are ``data``'s."""
    offset = int(data.caption_ids.max()) + 1 if len(data) else 0
    extra = replace(rows, caption_ids=rows.caption_ids + offset)

    def column(name: str) -> torch.Tensor:
        own = getattr(data, name)
        return torch.cat([own, getattr(extra, name).to(own.device)])

    columns: dict[str, Any] = {name: column(name) for name in PER_SAMPLE}
    return replace(data, **columns)


@torch.no_grad()
def per_sample_losses(
    model: torch.nn.Module, task: Task, data: TaskData, *, scale: float
) -> torch.Tensor:
    """``task``'s loss of each sample of ``data`` on its own (a per-sample objective's loss of
    a one-sample batch is that sample's term of any batch's mean)."""
    training = model.training
    model.eval()
    tensors = data.as_dataset().tensors
    losses = [
        task.loss(model, tuple(t[i : i + 1] for t in tensors), data, scale)
        for i in range(len(data))
    ]
    model.train(training)  # Opacus wraps only a model in training mode
    return torch.stack(losses).float().cpu()


def guess(scores: torch.Tensor, *, guesses_in: int, guesses_out: int) -> torch.Tensor:
    """The guesser of the audit: +1 ("member") for the ``guesses_in`` highest scores, -1 for
    the ``guesses_out`` lowest, 0 (abstain) for the rest; ties broken by canary order."""
    if guesses_in + guesses_out > len(scores):
        raise ValueError(f"{guesses_in} + {guesses_out} guesses exceed the {len(scores)} canaries")
    order = torch.argsort(scores, descending=True, stable=True)
    guesses = torch.zeros(len(scores), dtype=torch.long)
    guesses[order[:guesses_in]] = 1
    if guesses_out:
        guesses[order[len(scores) - guesses_out :]] = -1
    return guesses
