"""The linear-probe floor of a sweep: what a logistic regression on the frozen backbone's
image features reaches on the same data.

A white-box site could skip adaptation altogether: encode its images once with the frozen
backbone and fit a linear classifier on the features. If federated, private adaptation does
not beat that, it is not worth its cost; so a classification sweep reports the probe beside
its adapted figures. The probe is fitted on the sweep's training pool (all sites' data
together, ``data.train_size``: central, non-private, the most favourable setting for it), its
L2 strength chosen on the validation split (cut from the training pool) and scored once on
the test split, the splits the federated runs use. It is a floor without privacy, not a
private baseline: no DP noise, no federation.
"""

from __future__ import annotations

import torch

from fedgray.adapters import AdaptedCLIP
from fedgray.config import Config
from fedgray.tasks import TaskData
from fedgray.tasks.metrics import batched

STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Inverse L2 strengths ``C`` of scikit-learn's logistic regression tried on validation."""


def _features(model: AdaptedCLIP, data: TaskData) -> torch.Tensor:
    with torch.no_grad():
        features = batched(model.encode_images, data.images, 256)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def probe_accuracy(config: Config) -> dict[str, float]:
    """Test accuracy (percent) of the probe, and the ``C`` chosen on validation (the
    smallest of the best on ties: the strongest regularisation)."""
    from sklearn.linear_model import LogisticRegression

    from fedgray.fl.common.cache import shared_backbone, shared_data

    data, backbone = config.data, shared_backbone(config)
    sizes = {"train": data.train_size, "validation": data.validation_size, "test": data.test_size}
    splits = {
        split: shared_data(config, dataset=data.dataset, split=split, size=size)
        for split, size in sizes.items()
    }
    model = AdaptedCLIP(backbone)
    features = {split: _features(model, part).numpy() for split, part in splits.items()}
    labels = {split: part.labels.cpu().numpy() for split, part in splits.items()}

    def fitted(strength: float) -> LogisticRegression:
        probe = LogisticRegression(C=strength, max_iter=2000)
        return probe.fit(features["train"], labels["train"])

    validation = features["validation"], labels["validation"]
    scored = [(fitted(c).score(*validation), -c) for c in STRENGTHS]
    strength = -max(scored)[1]
    accuracy = fitted(strength).score(features["test"], labels["test"])
    return {"linear_probe_accuracy": 100.0 * float(accuracy), "linear_probe_c": strength}
