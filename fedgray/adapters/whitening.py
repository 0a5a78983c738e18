"""Public feature statistics that precondition the image output adapter (``method.whiten``).

A CLIP image tower's features are strongly anisotropic (the built-in tiny model's second
moment has eigenvalues from 1e-9 to 0.18 over 128 dimensions), so gradient steps on a linear
map over them move it along the few high-energy directions and barely along the rest. Under
DP-SGD a site has a few dozen noisy full-batch steps, and that is where they stop: on private
sketch retrieval without any noise, 50 steps reach R@1 46.5 plainly and 59.9 whitened.

``method.whiten`` names a public image dataset, normally the backbone's public source domain
(``world/photo`` for the built-in model). Its first :data:`SAMPLES` training images go through
the bare backbone, and the inverse square root of their normalised features' second moment
(scaled so that the mean energy per dimension is unchanged) becomes the fixed
``whitening`` of a :class:`~fedgray.adapters.modules.WhitenedOutputAdapter`. It depends on the
backbone and public data only: it spends no privacy budget, every party (server and sites)
computes the same matrix where it builds the model, and it is never sent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedgray.adapters.model import AdaptedCLIP
from fedgray.backbone import Backbone
from fedgray.data.registry import load_dataset
from fedgray.tasks.data import prepare

SAMPLES = 4000  # public images whose features give the statistics
CHUNK = 256  # images per backbone call
FLOOR = 1e-12  # added to the eigenvalues, only to keep the inverse square root finite
_WHITENINGS: dict[tuple[int, str], torch.Tensor] = {}


def public_whitening(backbone: Backbone, dataset: str) -> torch.Tensor:
    """The [D, D] whitening of ``backbone``'s image features by public ``dataset`` (cached
    per process and backbone)."""
    key = (id(backbone), dataset)
    if key not in _WHITENINGS:
        _WHITENINGS[key] = _whitening(_features(backbone, dataset))
    return _WHITENINGS[key]


@torch.no_grad()
def _features(backbone: Backbone, dataset: str) -> torch.Tensor:
    images = load_dataset(dataset, split="train", size=SAMPLES, seed=0)
    data = prepare(images, backbone.tokenize, image_size=backbone.interface.image_size)
    bare = AdaptedCLIP(backbone)
    return torch.cat([bare.encode_images(chunk) for chunk in data.images.split(CHUNK)])


def _whitening(features: torch.Tensor) -> torch.Tensor:
    """``M^(-1/2) * sqrt(mean eigenvalue)`` of the normalised features' second moment ``M``."""
    x = F.normalize(features.double(), dim=-1)
    values, vectors = torch.linalg.eigh(x.T @ x / len(x))
    values = values.clamp_min(0.0) + FLOOR
    scale = values.mean().sqrt()
    return (vectors @ torch.diag(values.rsqrt() * scale) @ vectors.T).float()
