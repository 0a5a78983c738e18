"""White-box baselines: LoRA, last layers, linear probe."""

from __future__ import annotations

import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch.nn.utils import parametrize

from fedgray.adapters import build_model
from fedgray.adapters.white import LORA_TARGETS, LastLayersConfig, LoraConfig, towers
from fedgray.backbone import SealedBackbone, SealedError, load_sealed
from fedgray.config import MethodConfig
from fedgray.fl.common.records import from_record, to_record
from fedgray.tasks.losses import contrastive_loss
from tests.helpers import close

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
        model = build_model(white, MethodConfig(name="lora", options={"lora": LoraConfig(rank=3)}))
        adapted_image, adapted_text = model(pixels, tokens)
    assert torch.equal(adapted_image, image) and torch.equal(adapted_text, text)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # LoRA on in_proj (3w x w), out_proj (w x w), c_fc (4w x w), c_proj (w x 4w),
        # 2 towers x 2 blocks. FFA-LoRA trains B only: rank * (3w + w + 4w + w) per block;
        # with A too: rank * (4w + 2w + 5w + 5w).
        (
            MethodConfig(name="lora", options={"lora": LoraConfig(rank=4)}),
            4 * 9 * WIDTH * 2 * LAYERS,
        ),
        (MethodConfig(name="lora", options={"lora": LoraConfig(rank=1)}), 9 * WIDTH * 2 * LAYERS),
        (
            MethodConfig(name="lora", options={"lora": LoraConfig(rank=4, train_a=True)}),
            4 * 16 * WIDTH * 2 * LAYERS,
        ),
        # A block: 12 w^2 (attention + MLP weights) + 13 w (biases, two layer norms).
        (
            MethodConfig(name="last-layers", options={"last_layers": LastLayersConfig(blocks=1)}),
            2 * (12 * WIDTH**2 + 13 * WIDTH),
        ),
        (
            MethodConfig(name="last-layers", options={"last_layers": LastLayersConfig(blocks=2)}),
            4 * (12 * WIDTH**2 + 13 * WIDTH),
        ),
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
    model = build_model(white, MethodConfig(name=method, options={"lora": LoraConfig(rank=2)}))
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
        assert not close(model.encode_images(pixels), bare, terms=white.interface.embed_dim)
    kept = [p for p in white.module.parameters() if id(p) in weights]
    assert len(kept) == len(weights)
    assert all(torch.equal(p, weights[id(p)]) and not p.requires_grad for p in kept)


def _weight_updates(backbone: SealedBackbone) -> dict[str, torch.Tensor]:
    """Every LoRA-parametrized weight of the backbone minus its original."""
    updates = {}
    for t, blocks in enumerate(towers(backbone.module)):
        for b, block in enumerate(blocks):
            for path, name in LORA_TARGETS:
                owner = block.get_submodule(path)
                original = owner.parametrizations[name].original
                updates[f"{t}.{b}.{path}.{name}"] = (getattr(owner, name) - original).detach()
    return updates


@pytest.mark.parametrize("train_a", [False, True])
def test_fedavg_of_lora_states_is_the_mean_of_the_sites_weight_updates_iff_a_is_frozen(
    white: SealedBackbone, train_a: bool
) -> None:
    options = MethodConfig(name="lora", options={"lora": LoraConfig(rank=2, train_a=train_a)})
    examples = [1.0, 3.0, 4.0]
    replies, updates = [], []
    for site, count in enumerate(examples):
        model = build_model(white, options)
        torch.manual_seed(site)
        with torch.no_grad():  # a site's training: every trainable tensor moves
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        updates.append(_weight_updates(white))
        replies.append(
            RecordDict(
                {
                    "arrays": to_record(model.state_dict()),
                    "metrics": MetricRecord({"num-examples": count}),
                }
            )
        )
    model = build_model(white, options)
    model.load_state_dict(from_record(aggregate_arrayrecords(replies, "num-examples")))
    aggregated = _weight_updates(white)
    mean = {
        k: sum(n * u[k] for n, u in zip(examples, updates, strict=True)) / sum(examples)
        for k in aggregated
    }
    error = max((aggregated[k] - mean[k]).abs().max().item() for k in mean)
    scale = max(m.abs().max().item() for m in mean.values())
    if train_a:  # FedAvg of A and B separately: the product of means, far from the mean
        assert error > 0.1 * scale
    else:  # FFA-LoRA: linear in B, so equal up to float rounding
        assert error < 1e-6 * scale


def test_lora_a_is_frozen_the_same_in_every_build_and_never_in_the_state(
    white: SealedBackbone,
) -> None:
    first, second = build_model(white, "lora"), build_model(white, "lora")
    downs = [[f.down for f in m.white_module] for m in (first, second)]
    assert all(torch.equal(a, b) for a, b in zip(*downs, strict=True))
    assert all(not d.requires_grad for d in downs[0])
    assert first.state_dict().keys() == {f"white_module.{i}.up" for i in range(len(downs[0]))}


def test_a_new_lora_replaces_the_one_attached_before(white: SealedBackbone) -> None:
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        bare = white.encode_image(pixels)
        old = build_model(white, "lora")
        for f in old.white_module:
            f.up.normal_()
        assert not close(white.encode_image(pixels), bare, terms=white.interface.embed_dim)
        build_model(white, "lora")  # B at zero: the backbone is bare again
        assert torch.equal(white.encode_image(pixels), bare)
    owner = towers(white.module)[0][0].attn
    assert parametrize.is_parametrized(owner, "in_proj_weight")
    assert len(owner.parametrizations["in_proj_weight"]) == 1


@pytest.mark.parametrize("method", ["lora", "last-layers", "linear-probe"])
def test_white_box_baselines_need_level_white(micro: SealedBackbone, method: str) -> None:
    with pytest.raises(SealedError, match=f"method '{method}' needs access level 'white'"):
        build_model(micro, method)


def test_last_layers_checks_the_block_count(white: SealedBackbone) -> None:
    with pytest.raises(ValueError, match="method.last_layers.blocks must be in 1..2"):
        build_model(
            white,
            MethodConfig(name="last-layers", options={"last_layers": LastLayersConfig(blocks=3)}),
        )
