"""28x28 grey scans (MNIST and its kin) as fedgray images, and class-name captions.

Every such set stores light ink on black; fedgray's digit sets show dark ink on white
paper, the way the built-in backbone's world draws glyphs, so all scans are framed alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fedgray.data.sets import ImageTextSet

SCAN_SIDE = 28
_FRAME = 32  # the scan is padded to this, so its content fills 20/32 as rendered glyphs do


def scan_images(pixels: np.ndarray, *, image_size: int) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` scans (ink 0..255 on 0) as float32 ``[N, 3, S, S]`` dark ink on
    white paper: padded to 32 and resized to ``image_size``."""
    if pixels.ndim != 3 or pixels.shape[1:] != (SCAN_SIDE, SCAN_SIDE):
        raise ValueError(f"expected scans of shape [N, 28, 28], got {list(pixels.shape)}")
    ink = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0)[:, None]
    pad = (_FRAME - SCAN_SIDE) // 2
    ink = F.pad(ink, (pad, pad, pad, pad))
    if image_size != _FRAME:
        ink = F.interpolate(ink, size=(image_size, image_size), mode="bilinear").clamp_(0, 1)
    return (1.0 - ink).expand(-1, 3, -1, -1).contiguous()


def named_class_set(
    pixels: np.ndarray,
    labels: np.ndarray,
    chosen: np.ndarray,
    *,
    nouns: dict[str, str],
    templates: Sequence[str],
    name: str,
    image_size: int,
) -> ImageTextSet:
    """The scans at ``chosen``, class ``c`` named by the ``c``-th key of ``nouns``, whose value
    is the noun phrase the templates take (e.g. "an elephant").

    Sample ``i`` is captioned by template ``i mod len(templates)`` (``i`` its index in the
    whole pool, so a sample keeps its caption in every split); each class's prompts are all
    templates filled with its noun, and those are the public captions too (they derive
    from the class names alone, never from the samples)."""
    prompts = [[template.format(noun) for template in templates] for noun in nouns.values()]
    target = labels[chosen]
    return ImageTextSet(
        images=scan_images(pixels[chosen], image_size=image_size),
        captions=[prompts[y][i % len(templates)] for i, y in zip(chosen, target, strict=True)],
        labels=torch.from_numpy(target.astype(np.int64)),
        class_names=list(nouns),
        class_prompts=prompts,
        name=name,
        public_captions=[p for class_prompts in prompts for p in class_prompts],
    )
