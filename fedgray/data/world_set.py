"""Render a range of world scenes into an :class:`ImageTextSet`."""

from __future__ import annotations

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


def make_world_set(
    n: int,
    *,
    seed: int,
    domain: str,
    offset: int = 0,
    caption_style: str = "full",
    image_size: int = 32,
    noise_sigma: float = NOISE_SIGMA,
) -> ImageTextSet:
    """Render world scenes ``offset .. offset + n - 1`` of world ``seed`` in ``domain``.

    Every sample depends only on ``(seed, index)``, so ranges can be rendered separately and
    the same indices give the same scenes (paired images) in every domain.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pixels = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    captions: list[str] = []
    labels = np.empty(n, dtype=np.int64)
    for row, index in enumerate(range(offset, offset + n)):
        scene = sample_scene(index, seed=seed)
        pixels[row] = render(
            scene,
            domain=domain,
            index=index,
            seed=seed,
            image_size=image_size,
            noise_sigma=noise_sigma,
        )
        rng = np.random.default_rng([seed, index, _CAPTION_STREAM])
        captions.append(caption(scene, domain=domain, style=caption_style, rng=rng))
        labels[row] = scene.label
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
