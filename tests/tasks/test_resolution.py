"""Images stay at their own resolution in memory; the model fits each batch to the backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fedgray.adapters import build_model
from fedgray.backbone import SealedBackbone
from fedgray.data.registry import load_dataset
from fedgray.tasks import evaluate, prepare
from fedgray.tasks.data import fit_pixels


def test_prepared_images_keep_their_resolution_and_evaluate_as_if_fitted_up_front(
    micro: SealedBackbone,
) -> None:
    dataset = load_dataset("world/photo", split="test", size=12, image_size=20)
    data = prepare(dataset, micro.tokenize)
    assert data.images.shape[1:] == (3, 20, 20)  # 0.39x the bytes of the 32 px input
    fitted = replace(data, images=fit_pixels(data.images, micro.interface.image_size))
    assert fitted.images.shape[1:] == (3, 32, 32) and fit_pixels(fitted.images, 32) is fitted.images
    model = build_model(micro, "dga")  # an image input module that needs 32 px
    torch.nn.init.normal_(next(model.image_in.parameters()), std=0.1)
    # fitted batch by batch (5, 5, 2) as the whole set fitted at once: bit for bit
    assert evaluate(model, data, batch_size=5) == evaluate(model, fitted, batch_size=5)


def test_gradients_reach_the_input_module_from_native_resolution_images(
    micro: SealedBackbone,
) -> None:
    pixels = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    model = build_model(micro, "dga")
    image, text = model(pixels, micro.tokenize(["a red circle"] * 3))
    (image * text).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_in.parameters())


def test_prepared_tokens_are_each_captions_own_with_equal_captions_tokenized_once(
    micro: SealedBackbone,
) -> None:
    dataset = load_dataset("world/photo", split="train", size=60)
    asked: list[int] = []

    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        asked.append(len(texts))
        return micro.tokenize(texts)

    data = prepare(dataset, tokenize)
    assert torch.equal(data.tokens, micro.tokenize(dataset.captions))  # integer ids
    distinct = len(set(dataset.captions))
    assert distinct < len(dataset) and asked[0] == distinct
    same = [
        (i, j) for i in range(60) for j in range(60) if dataset.captions[i] == dataset.captions[j]
    ]
    assert all(data.caption_ids[i] == data.caption_ids[j] for i, j in same)
