"""Public statistics that shape the image output adapter (``method.whiten``,
``method.text_subspace``).

A CLIP image tower's features are strongly anisotropic (the built-in tiny model's second
moment has eigenvalues from 1e-9 to 0.18 over 128 dimensions), so gradient steps on a linear
map over them move it along the few high-energy directions and barely along the rest. Under
DP-SGD a site has a few dozen noisy full-batch steps, and that is where they stop: on private
sketch retrieval without any noise, 50 steps reach R@1 46.5 plainly and 59.9 whitened.

``method.whiten`` names a public image dataset, normally the backbone's public source domain
(``world/photo`` for the built-in model). Its first :data:`SAMPLES` training images go through
the bare backbone, and the inverse square root of their normalised features' second moment
(scaled so that the mean energy per dimension is unchanged) becomes the fixed ``whitening``
of a :class:`~fedgray.adapters.modules.WhitenedOutputAdapter`.

``method.text_subspace: K`` also confines the adapter's correction to the K leading
directions of the same dataset's caption features. Image features are only ever compared
with text features by cosine, so a correction outside the texts' span changes nothing but
the features' norms; under DP it is noise without signal there (on the tiny model 32 of 128
directions hold all but 1e-4 of the captions' energy, and the noised values fall from
16,512 to 4,128).

Both depend on the backbone and public data only: they spend no privacy budget, every party
(server and sites) computes the same matrices where it builds the model, and they are never
sent.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from fedgray.adapters.model import AdaptedCLIP
from fedgray.backbone import Backbone
from fedgray.data.registry import load_dataset
from fedgray.tasks.data import prepare
from fedgray.tasks.metrics import batched

SAMPLES = 4000  # public images (and their captions) that give the statistics
CHUNK = 256  # images per backbone call
FLOOR = 1e-12  # added to the eigenvalues, only to keep the inverse square root finite


class PublicStatistics(NamedTuple):
    """``whitening`` [D, D] of the image features; ``text_directions`` [D, D], columns the
    caption features' principal directions, leading first."""

    whitening: torch.Tensor
    text_directions: torch.Tensor


_STATISTICS: dict[tuple[int, str], PublicStatistics] = {}


def public_statistics(backbone: Backbone, dataset: str) -> PublicStatistics:
    """``backbone``'s statistics of public ``dataset`` (cached per process and backbone)."""
    key = (id(backbone), dataset)
    if key not in _STATISTICS:
        images, texts = _features(backbone, dataset)
        _STATISTICS[key] = PublicStatistics(_whitening(images), _directions(texts))
    return _STATISTICS[key]


@torch.no_grad()
def _features(backbone: Backbone, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bare image features of the first :data:`SAMPLES` images, text features of their
    distinct captions."""
    public = load_dataset(dataset, split="train", size=SAMPLES, seed=0)
    data = prepare(public, backbone.tokenize)
    data = data.to(backbone.device)
    bare = AdaptedCLIP(backbone)
    captions = backbone.tokenize(list(dict.fromkeys(public.captions)))
    images = batched(bare.encode_images, data.images, CHUNK)
    return images, batched(bare.encode_texts, captions, CHUNK)


def _whitening(features: torch.Tensor) -> torch.Tensor:
    """``M^(-1/2) * sqrt(mean eigenvalue)`` of the normalised features' second moment ``M``."""
    x = F.normalize(features.double(), dim=-1)
    values, vectors = torch.linalg.eigh(x.T @ x / len(x))
    values = values.clamp_min(0.0) + FLOOR
    scale = values.mean().sqrt()
    return (vectors @ torch.diag(values.rsqrt() * scale) @ vectors.T).float()


def _directions(features: torch.Tensor) -> torch.Tensor:
    """The normalised features' right singular vectors as columns, leading first."""
    x = F.normalize(features.double(), dim=-1)
    return torch.linalg.svd(x, full_matrices=True).Vh.T.float().contiguous()
