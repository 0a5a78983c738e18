"""Render a range of world scenes into an :class:`ImageTextSet`, in one process or several.

Every sample depends only on ``(seed, index)`` (its own random streams), so a range split
into blocks rendered by separate processes gives the same bits as one loop over it.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedgray.data.sets import ImageTextSet
from fedgray.data.world import (
    CLASS_NAMES,
    NOISE_SIGMA,
    caption,
    caption_vocabulary,
    class_prompts,
    render,
    sample_scene,
)

_CAPTION_STREAM = 3  # rng stream tag for "varied" captions, next to (seed, index)


_BLOCK = 2_000  # scenes per task of a worker pool: small enough to share the work evenly


@dataclass(frozen=True)
class _Block:
    """Scenes ``offset .. offset + n - 1`` of world ``seed`` to render in ``domain``."""

    n: int
    seed: int
    domain: str
    offset: int
    caption_style: str
    image_size: int
    noise_sigma: float


def _render_block(block: _Block) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Pixels ``[n, H, W, 3]`` (uint8), captions and labels of ``block``'s scenes."""
    size = block.image_size
    pixels = np.empty((block.n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    labels = np.empty(block.n, dtype=np.int64)
    for row, index in enumerate(range(block.offset, block.offset + block.n)):
        scene = sample_scene(index, seed=block.seed)
        pixels[row] = render(
            scene,
            domain=block.domain,
            index=index,
            seed=block.seed,
            image_size=size,
            noise_sigma=block.noise_sigma,
        )
        rng = np.random.default_rng([block.seed, index, _CAPTION_STREAM])
        captions.append(caption(scene, domain=block.domain, style=block.caption_style, rng=rng))
        labels[row] = scene.label
    return pixels, captions, labels


def _render_blocks(whole: _Block, workers: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``whole`` rendered by ``workers`` processes, :data:`_BLOCK` scenes a task, in order.

    Workers are forked: they start at once and need nothing but numpy and PIL, which hold
    no lock of the parent's threads."""
    blocks = [
        replace(whole, n=min(_BLOCK, whole.n - start), offset=whole.offset + start)
        for start in range(0, whole.n, _BLOCK)
    ]
    if workers == 1 or len(blocks) == 1:
        parts = [_render_block(block) for block in blocks]
    else:
        with multiprocessing.get_context("fork").Pool(min(workers, len(blocks))) as pool:
            parts = pool.map(_render_block, blocks, chunksize=1)
    captions = [text for _, block_captions, _ in parts for text in block_captions]
    return (
        np.concatenate([pixels for pixels, _, _ in parts]),
        captions,
        np.concatenate([labels for _, _, labels in parts]),
    )


def make_world_set(
    n: int,
    *,
    seed: int,
    domain: str,
    offset: int = 0,
    caption_style: str = "full",
    image_size: int = 32,
    noise_sigma: float = NOISE_SIGMA,
    workers: int = 1,
) -> ImageTextSet:
    """Render world scenes ``offset .. offset + n - 1`` of world ``seed`` in ``domain``.

    Every sample depends only on ``(seed, index)``, so ranges can be rendered separately and
    the same indices give the same scenes (paired images) in every domain; ``workers``
    processes render a large range in blocks, with the same bits as one (the owner's 40,000
    pretraining images: a pool pays off from a few thousand scenes on).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    whole = _Block(n, seed, domain, offset, caption_style, image_size, noise_sigma)
    pixels, captions, labels = _render_blocks(whole, workers)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return ImageTextSet(
        images=images,
        captions=captions,
        labels=torch.from_numpy(labels),
        class_names=list(CLASS_NAMES),
        class_prompts=class_prompts(domain=domain),
        name=f"world/{domain}",
        public_captions=caption_vocabulary(domain=domain),
    )
