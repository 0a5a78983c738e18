"""Evaluation: Recall@K in both directions and prompt-based classification accuracy.

Classification scores as the loss trains and as CraFT predicts: a class's logit is the
logsumexp of its prompts' similarities at the backbone's logit scale (one rule; pooling
at another scale can rank classes with several prompts differently).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, encoders, similarity

RECALL_AT = (1, 5, 10)
EVAL_BATCH = 256  # rows per encoder call when a split is scored


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` applied to ``x`` in slices of ``size`` rows, concatenated (one call per slice)."""
    return torch.cat([fn(x[i : i + size]) for i in range(0, x.shape[0], size)])


def batched_calls(rows: int, size: int) -> int:
    """The calls :func:`batched` makes for ``rows`` rows in slices of ``size``."""
    return -(-rows // size)


def recall_at_k(
    image_features: torch.Tensor,
    caption_features: torch.Tensor,
    caption_ids: torch.Tensor,
    *,
    ks: Sequence[int] = RECALL_AT,
) -> dict[str, float]:
    """Recall@K (percent) over distinct captions.

    ``caption_features`` [U, D] holds one row per distinct caption id ``0..U-1``;
    image i's caption is ``caption_ids[i]``. Image-to-text: the true caption is in the
    top K. Text-to-image: some image with that caption is in the top K.
    """
    sims = similarity(image_features, caption_features, 1.0)
    owner = torch.nn.functional.one_hot(caption_ids, caption_features.shape[0]).bool()
    i2t_rank = (sims > sims.gather(1, caption_ids[:, None])).sum(1)
    best_image = sims.masked_fill(~owner, float("-inf")).max(0).values
    t2i_rank = (sims > best_image[None, :]).sum(0)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * (i2t_rank < k).float().mean().item()
        out[f"t2i_r{k}"] = 100.0 * (t2i_rank < k).float().mean().item()
    out["r1_mean"] = 0.5 * (out["i2t_r1"] + out["t2i_r1"])
    return out


def logit_scale(model: torch.nn.Module) -> float:
    """The backbone's logit scale, the one scale classes are scored at (``model``: an
    ``AdaptedCLIP``, or a module forwarding its attributes to one)."""
    return float(cast(Any, model).backbone.interface.logit_scale)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: TaskData, *, batch_size: int = EVAL_BATCH
) -> dict[str, float]:
    """Retrieval and classification metrics of ``model`` (an ``AdaptedCLIP``) on ``data``;
    class logits pool each class's prompts at the backbone's logit scale, as the loss does."""
    was_training = model.training
    model.eval()
    towers = encoders(model)
    images = batched(towers.encode_images, data.images, batch_size)
    first = torch.unique(data.caption_ids, sorted=True)
    first_index = torch.stack([(data.caption_ids == c).nonzero()[0, 0] for c in first])
    captions = batched(towers.encode_texts, data.tokens[first_index], batch_size)
    metrics = recall_at_k(images, captions, data.caption_ids)
    prompts = batched(towers.encode_texts, data.prompt_tokens, batch_size)
    logits = class_logits(
        images, prompts, data.prompt_classes, num_classes=data.num_classes, scale=logit_scale(model)
    )
    metrics["accuracy"] = 100.0 * (logits.argmax(1) == data.labels).float().mean().item()
    model.train(was_training)
    return metrics


def evaluation_calls(data: TaskData, *, batch_size: int = EVAL_BATCH) -> int:
    """The backbone calls :func:`evaluate` makes on ``data``, known before it runs, so that
    a run can check its query budget covers its scorings before it starts: the images, the
    distinct captions and the class prompts, each in slices of ``batch_size``."""
    captions = int(torch.unique(data.caption_ids).numel())
    rows = (data.images.shape[0], captions, data.prompt_tokens.shape[0])
    return sum(batched_calls(count, batch_size) for count in rows)
