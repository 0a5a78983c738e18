"""The model owner's side of the built-in benchmark: pretrain a tiny CLIP once, cache it.

The owner trains open_clip's ``CLIP`` (a built-in config such as ``fedgray-tiny``) with
the standard contrastive loss on the benchmark's source domain (``world/photo``) with
varied caption templates. Training is deterministic for a given recipe, so the cache
key is a hash of the recipe; ``fedgray pretrain`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import cast

import torch
from tqdm.auto import tqdm

from fedgray.backbone.access import AccessLevel
from fedgray.backbone.families import text_parts
from fedgray.backbone.loading import BUILTIN_TAG, create_clip, get_tokenizer
from fedgray.backbone.sealed import SealedBackbone
from fedgray.config import PretrainConfig
from fedgray.data.sets import ImageTextSet
from fedgray.data.world_set import make_world_set
from fedgray.owner.embedding_rows import UsedRowsAdamW
from fedgray.paths import cache_dir
from fedgray.tasks.data import TaskData, fit_pixels, prepare
from fedgray.tasks.losses import contrastive_loss

RECIPE_VERSION = 2  # bump when the world or the training procedure changes
OWNER_OFFSET = 20_000_000  # the owner's scenes: disjoint from every site's train and test scenes
# How many threads torch splits the pretraining's matmuls over, whatever the calling process
# set: the split changes their rounding, so the checkpoint's bits (and every figure measured
# on it) would otherwise depend on which process pretrained first (a site's process on one
# thread, `fedgray pretrain` on every core). Two: the cores of the machine the figures come
# from; more threads than cores still give these bits, only slower.
PRETRAIN_THREADS = 2


def checkpoint_path(name: str, recipe: PretrainConfig) -> Path:
    """Cache location of ``name`` pretrained with ``recipe``."""
    key = json.dumps({"name": name, "v": RECIPE_VERSION, **asdict(recipe)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "backbones" / f"{name}-{BUILTIN_TAG}-{digest}.pt"


def _lr_factor(step: int, recipe: PretrainConfig) -> float:
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_loss(owner: SealedBackbone, data: TaskData, index: torch.Tensor) -> torch.Tensor:
    """The owner's contrastive loss on samples ``index`` of ``data`` (images fitted to the
    model's input size), at the model's own logit scale, clamped as CLIP does."""
    scale = cast(torch.Tensor, owner.module.logit_scale).exp().clamp(max=100.0)
    return contrastive_loss(
        owner.encode_image(fit_pixels(data.images[index], owner.interface.image_size)),
        owner.encode_text(data.tokens[index]),
        scale=scale,
        caption_ids=data.caption_ids[index],
    )


def owner_photos(recipe: PretrainConfig, *, workers: int = 1) -> ImageTextSet:
    """The owner's pretraining set: ``recipe.train_size`` captioned photos of the source
    domain, drawn past every site's (``OWNER_OFFSET``); ``workers`` processes render them,
    to the same bits as one."""
    return make_world_set(
        recipe.train_size,
        seed=recipe.seed,
        domain="photo",
        caption_style="varied",
        offset=OWNER_OFFSET,
        workers=workers,
    )


def pretrain(name: str, recipe: PretrainConfig, *, progress: bool = True) -> Path:
    """Pretrain ``name`` on the source domain with ``recipe`` on :data:`PRETRAIN_THREADS`
    threads; write and return the checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _pretrain(name, recipe, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(name: str, recipe: PretrainConfig, *, progress: bool) -> Path:
    torch.manual_seed(recipe.seed)
    model = create_clip(name, None)
    # Train through the white-level wrapper: the same preprocessing sites will get.
    owner = SealedBackbone(model, get_tokenizer(name), name=name, level=AccessLevel.WHITE)
    model.requires_grad_(True)
    started = time.perf_counter()
    world = owner_photos(recipe, workers=os.cpu_count() or 1)
    data = prepare(world, owner.tokenize)
    optimizer = UsedRowsAdamW(
        model.parameters(),
        table=text_parts(model).embedding.weight,
        rows=torch.unique(data.tokens),  # every row a batch can read
        lr=recipe.lr,
        weight_decay=0.1,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer, lambda s: _lr_factor(s, recipe)
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    bar = tqdm(range(recipe.steps), desc=f"pretrain {name}", disable=not progress)
    for _ in bar:
        index = torch.randint(len(data), (recipe.batch_size,), generator=generator)
        loss = batch_loss(owner, data, index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    optimizer.finish()
    path = checkpoint_path(name, recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": asdict(recipe), "seconds": time.perf_counter() - started}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save({"state_dict": model.state_dict(), "fedgray": meta}, handle)
    os.replace(handle.name, path)
    return path


def builtin_checkpoint(name: str, recipe: PretrainConfig, *, progress: bool = True) -> Path:
    """The cached checkpoint of ``name`` for ``recipe``, pretraining it first if missing."""
    path = checkpoint_path(name, recipe)
    return path if path.is_file() else pretrain(name, recipe, progress=progress)


def resolve_pretrained(
    name: str, pretrained: str | None, recipe: PretrainConfig, *, progress: bool = True
) -> str | Path | None:
    """``pretrained`` as open_clip takes it: the built-in tag becomes its cached checkpoint."""
    if pretrained == BUILTIN_TAG:
        return builtin_checkpoint(name, recipe, progress=progress)
    return pretrained
