"""White-box baselines: LoRA, last layers, linear probe."""

from __future__ import annotations

import pytest
import torch

from fedgray.adapters import build_model
from fedgray.backbone import SealedBackbone, SealedError, load_sealed
from fedgray.config import MethodConfig
from fedgray.tasks.losses import contrastive_loss

CAPTIONS = [
    "a red circle",
    "the digit 7 in blue",
    "a small green star at the top left",
    "a large ring",
    "the digit 3",
    "a yellow square at the bottom",
]
WIDTH, LAYERS, EMBED = 64, 2, 32  # fedgray-micro: both towers


@pytest.fixture
def white() -> SealedBackbone:
    torch.manual_seed(0)
    return load_sealed("fedgray-micro", None, level="white")


def test_lora_at_init_reproduces_the_backbone_exactly(white: SealedBackbone) -> None:
    pixels, tokens = torch.rand(4, 3, 32, 32), white.tokenize(CAPTIONS[:4])
    with torch.no_grad():
        image, text = white.encode_image(pixels), white.encode_text(tokens)
        model = build_model(white, MethodConfig(name="lora", lora_rank=3))
        adapted_image, adapted_text = model(pixels, tokens)
    assert torch.equal(adapted_image, image) and torch.equal(adapted_text, text)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # LoRA on in_proj (3w x w), out_proj (w x w), c_fc (4w x w), c_proj (w x 4w):
        # rank * (4w + 2w + 5w + 5w) per block, 2 towers x 2 blocks.
        (MethodConfig(name="lora", lora_rank=4), 4 * 16 * WIDTH * 2 * LAYERS),
        (MethodConfig(name="lora", lora_rank=1), 16 * WIDTH * 2 * LAYERS),
        # A block: 12 w^2 (attention + MLP weights) + 13 w (biases, two layer norms).
        (MethodConfig(name="last-layers", last_layers=1), 2 * (12 * WIDTH**2 + 13 * WIDTH)),
        (MethodConfig(name="last-layers", last_layers=2), 4 * (12 * WIDTH**2 + 13 * WIDTH)),
        (MethodConfig(name="linear-probe"), 2 * (EMBED**2 + EMBED)),
    ],
)
def test_trainable_parameter_counts(
    white: SealedBackbone, options: MethodConfig, expected: int
) -> None:
    model = build_model(white, options)
    assert model.trainable_count() == expected
    assert sum(v.numel() for v in model.state_dict().values()) == expected


@pytest.mark.parametrize("method", ["lora", "last-layers", "linear-probe"])
def test_each_baseline_trains_and_its_loss_decreases(white: SealedBackbone, method: str) -> None:
    model = build_model(white, MethodConfig(name=method, lora_rank=2))
    pixels, tokens = torch.rand(len(CAPTIONS), 3, 32, 32), white.tokenize(CAPTIONS)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        loss = contrastive_loss(*model(pixels, tokens), scale=white.interface.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_lora_training_changes_outputs_never_the_backbone_weights(white: SealedBackbone) -> None:
    pixels, tokens = torch.rand(4, 3, 32, 32), white.tokenize(CAPTIONS[:4])
    with torch.no_grad():
        bare = white.encode_image(pixels)
    weights = {id(p): p.detach().clone() for p in white.module.parameters()}
    model = build_model(white, "lora")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = contrastive_loss(*model(pixels, tokens), scale=white.interface.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(model.encode_images(pixels), bare)
    kept = [p for p in white.module.parameters() if id(p) in weights]
    assert len(kept) == len(weights)
    assert all(torch.equal(p, weights[id(p)]) and not p.requires_grad for p in kept)


@pytest.mark.parametrize("method", ["lora", "last-layers", "linear-probe"])
def test_white_box_baselines_need_level_white(micro: SealedBackbone, method: str) -> None:
    with pytest.raises(SealedError, match=f"method '{method}' needs access level 'white'"):
        build_model(micro, method)


def test_last_layers_checks_the_block_count(white: SealedBackbone) -> None:
    with pytest.raises(ValueError, match="method.last_layers must be in 1..2"):
        build_model(white, MethodConfig(name="last-layers", last_layers=3))
