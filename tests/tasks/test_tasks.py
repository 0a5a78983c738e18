"""Losses and metrics on constructed features whose answers are known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from fedgray.tasks.data import TaskData
from fedgray.tasks.losses import class_logits, contrastive_loss
from fedgray.tasks.metrics import evaluate, recall_at_k
from tests.helpers import assert_close


def test_recall_is_perfect_for_matching_features_and_counts_duplicates() -> None:
    captions = torch.eye(4)
    caption_ids = torch.tensor([0, 1, 2, 3, 3])  # two images share caption 3
    images = captions[caption_ids]
    metrics = recall_at_k(images, captions, caption_ids, ks=(1,))
    assert metrics["i2t_r1"] == 100.0 and metrics["t2i_r1"] == 100.0


def test_recall_with_one_known_miss() -> None:
    captions = torch.eye(3)
    # image 1 is nearer caption 2 than its own; image 0 is nearer caption 1 than image 1 is
    images = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0], [0.0, 0.0, 1.0]])
    metrics = recall_at_k(images, captions, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert math.isclose(metrics["i2t_r1"], 200 / 3, rel_tol=1e-6)
    assert math.isclose(metrics["t2i_r1"], 200 / 3, rel_tol=1e-6)  # caption 1 ranks image 0 first
    assert metrics["i2t_r2"] == metrics["t2i_r2"] == 100.0


def test_contrastive_loss_ignores_negatives_with_the_same_caption() -> None:
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([0, 0, 1])
    masked = contrastive_loss(features, features, scale=10.0, caption_ids=ids)
    plain = contrastive_loss(features, features, scale=10.0)
    assert masked < 1e-3 < plain


def test_class_logits_are_logsumexp_over_each_class_prompts() -> None:
    images = torch.tensor([[1.0, 0.0]])
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    logits = class_logits(images, prompts, torch.tensor([0, 1, 1]), num_classes=2, scale=1.0)
    assert_close(logits, torch.tensor([[1.0, math.log(2.0)]]), terms=2)


def test_subset_renumbers_caption_ids_so_evaluation_works_on_it() -> None:
    from fedgray.tasks.data import TaskData

    data = TaskData(
        images=torch.zeros(4, 3, 2, 2),
        tokens=torch.zeros(4, 3, dtype=torch.long),
        caption_ids=torch.tensor([0, 1, 2, 2]),
        labels=torch.zeros(4, dtype=torch.long),
        prompt_tokens=torch.zeros(1, 3, dtype=torch.long),
        prompt_classes=torch.zeros(1, dtype=torch.long),
        num_classes=1,
    )
    assert data.subset([3, 2, 1]).caption_ids.tolist() == [1, 1, 0]


class _Fixed(torch.nn.Module):
    """Towers that return given features: images are their own features, token ids rows
    of ``texts``; the backbone publishes only its logit scale."""

    def __init__(self, texts: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.texts = texts
        self.backbone = SimpleNamespace(interface=SimpleNamespace(logit_scale=scale))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.texts[tokens[:, 0]]


def test_evaluate_pools_class_prompts_at_the_logit_scale_as_the_loss_does() -> None:
    # Class 0: one prompt at cosine 0.9; class 1: three prompts at cosine 0.8. Pooled at
    # scale 1, class 1 wins (0.8 + ln 3 > 0.9); at the logit scale 100, class 0 (90 > 81.1).
    texts = torch.tensor(
        [[0.9, math.sqrt(0.19), 0.0], [0.8, 0.6, 0.0], [0.8, 0.0, 0.6], [0.8, 0.0, -0.6]]
    )
    image = torch.tensor([[1.0, 0.0, 0.0]])
    data = TaskData(
        images=image,
        tokens=torch.zeros(1, 1, dtype=torch.long),
        caption_ids=torch.zeros(1, dtype=torch.long),
        labels=torch.zeros(1, dtype=torch.long),
        prompt_tokens=torch.arange(4)[:, None],
        prompt_classes=torch.tensor([0, 1, 1, 1]),
        num_classes=2,
    )
    pooled = {
        scale: class_logits(image, texts, data.prompt_classes, num_classes=2, scale=scale)
        for scale in (1.0, 100.0)
    }
    assert pooled[1.0].argmax().item() == 1 and pooled[100.0].argmax().item() == 0
    assert evaluate(_Fixed(texts, 100.0), data)["accuracy"] == 100.0
    assert evaluate(_Fixed(texts, 1.0), data)["accuracy"] == 0.0
