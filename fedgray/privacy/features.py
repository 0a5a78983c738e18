"""Cached backbone features for DP-SGD when only the image output module trains.

Under DP the text side is frozen (:mod:`fedgray.privacy.objectives`); when the image side
trains nothing before the backbone either (method ``output`` and its smaller forms), every
image's backbone features are fixed for a whole local training call. They are computed
once per process for each (backbone, images, values of the modules before the backbone)
and found again by a hash of those: a changed module or dataset is a new entry,
and a site sees its features round after round without running the backbone again.
DP-SGD then steps a small head over them: a step costs a matrix product instead of a
backbone forward and backward, so full batches (Poisson sample rate 1), many steps and
many epochs become affordable. The loss is the same function of the same inputs, so
per-sample gradients, clipping, noise and the accounting are exactly those of the
uncached path.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace

import torch
from torch import nn

from fedgray.adapters import AdaptedCLIP
from fedgray.tasks.data import TaskData

CHUNK = 256  # images per backbone call while caching
ENTRIES = 64  # cached feature sets per process (a federation's sites, a few configs)
_FEATURES: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()


class CachedImageHead(nn.Module):
    """``model`` seen from its cached image features: ``encode_images`` applies only the
    image output module; ``encode_texts`` is the model's text side, its backbone part
    memoised by token row (no gradient: no module before the text backbone trains under
    DP). The text output module, when the objective trains it (``privacy.objective:
    text-out``), is a submodule applied afresh to the memoised features."""

    model: AdaptedCLIP  # held outside the module tree: only the output modules are stepped

    def __init__(self, model: AdaptedCLIP) -> None:
        super().__init__()
        self.image_out = model.image_out
        trains_text = model.text_out is not None and any(
            p.requires_grad for p in model.text_out.parameters()
        )
        self.text_out = model.text_out if trains_text else None
        object.__setattr__(self, "model", model)
        self._texts: dict[bytes, torch.Tensor] = {}

    def encode_images(self, features: torch.Tensor) -> torch.Tensor:
        """Image features [B, D] from cached backbone features [B, D]."""
        return self.image_out(features) if self.image_out is not None else features

    def bare_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features [B, D] before the text output module (each distinct row once)."""
        keys = [row.numpy().tobytes() for row in tokens.cpu()]
        fresh = [k for k in dict.fromkeys(keys) if k not in self._texts]
        if fresh:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            with torch.no_grad():
                encoded = self.model.bare_texts(tokens[[first[k] for k in fresh]])
            self._texts.update(zip(fresh, encoded, strict=True))
        return torch.stack([self._texts[k] for k in keys])

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features [B, D]; without gradient unless the text output module trains."""
        z = self.bare_texts(tokens)
        if self.text_out is not None:
            return self.text_out(z)
        if self.model.text_out is None:
            return z
        with torch.no_grad():
            return self.model.text_out(z)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image and text features of paired inputs."""
        return self.encode_images(features), self.encode_texts(tokens)


def cacheable(model: AdaptedCLIP) -> bool:
    """Whether every trainable parameter of ``model`` sits in its output modules (the
    image features then stay fixed, and the text output module sees memoised features)."""
    heads = [m for m in (model.image_out, model.text_out) if m is not None]
    head = {id(p) for m in heads for p in m.parameters()}
    return all(id(p) in head for p in model.parameters() if p.requires_grad)


IMAGE_SIDE = ("image_in", "image_prompts", "white_module")  # what image features depend on


def _fingerprint(model: AdaptedCLIP, images: torch.Tensor) -> str:
    """A hash of ``images`` and of every tensor of the modules the image features depend on."""
    modules = [getattr(model, name) for name in IMAGE_SIDE if getattr(model, name) is not None]
    digest = hashlib.blake2b(digest_size=20)
    for tensor in (images, *(t for m in modules for t in (*m.parameters(), *m.buffers()))):
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def backbone_features(model: AdaptedCLIP, images: torch.Tensor) -> torch.Tensor:
    """What ``model``'s image output module sees for ``images``, from the process cache."""
    key = (id(model.backbone), _fingerprint(model, images))
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key]
    _FEATURES[key] = features = _compute(model, images)
    while len(_FEATURES) > ENTRIES:
        _FEATURES.popitem(last=False)
    return features


@torch.no_grad()
def _compute(model: AdaptedCLIP, images: torch.Tensor) -> torch.Tensor:
    """``model.encode_images`` without its image output module."""
    head = model.image_out
    model.image_out = None
    try:
        return torch.cat([model.encode_images(chunk) for chunk in images.split(CHUNK)])
    finally:
        model.image_out = head


def cached_head(model: AdaptedCLIP, data: TaskData) -> tuple[CachedImageHead, TaskData]:
    """The head to step and ``data`` with its images replaced by backbone features.

    Raises ValueError (naming the option) when a module before the backbone trains.
    """
    if not cacheable(model):
        trainable = sorted(
            {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        )
        raise ValueError(
            "privacy.cache_features: only the output modules may train under it "
            f"(trainable here: {', '.join(trainable)}); use method 'output' or one of its forms"
        )
    return CachedImageHead(model), replace(data, images=backbone_features(model, data.images))
