"""Gray-box modules: identity at initialisation, budgets, access checks, gradients."""

from __future__ import annotations

import pytest
import torch

from fedgray.adapters import METHODS, build_model
from fedgray.backbone import SealedBackbone, SealedError, load_sealed
from tests.helpers import close

CAPTIONS = ["a red circle", "the digit 7 in blue", "a small green star at the top left", "x"]


@pytest.mark.parametrize(
    ("level", "method"), [("gray", "output"), ("gray", "dga"), ("gray+", "lga")]
)
def test_untrained_adapters_reproduce_the_bare_backbone_exactly(level: str, method: str) -> None:
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None, level=level)
    model = build_model(backbone, method)
    pixels, tokens = torch.rand(4, 3, 32, 32), backbone.tokenize(CAPTIONS)
    with torch.no_grad():
        image, text = model(pixels, tokens)
        assert torch.equal(image, backbone.encode_image(pixels))
        assert torch.equal(text, backbone.encode_text(tokens))


def test_every_trainable_module_gets_gradients_through_the_backbone() -> None:
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None, level="gray+")
    model = build_model(backbone, "lga")
    with torch.no_grad():  # open the zero-initialised gates so every tensor is on the path
        model.text_in.gate.weight.fill_(0.5)
        model.image_prompts.gates.weight.fill_(0.5)
        model.text_prompts.gates.weight.fill_(0.5)
    image, text = model(torch.rand(4, 3, 32, 32), backbone.tokenize(CAPTIONS))
    (image @ text.T).logsumexp(1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_trained_adapters_change_the_output(micro: SealedBackbone) -> None:
    model = build_model(micro, "dga")
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_images(pixels)
        model.image_in.convs[0].weight.add_(0.01)
        assert not close(before, model.encode_images(pixels), terms=micro.interface.embed_dim)


def test_parameter_budget_on_a_vit_b_32_sized_backbone() -> None:
    backbone = load_sealed("ViT-B-32", None, level="gray")
    model = build_model(backbone, "dga")
    assert backbone.interface.parameter_count > 150_000_000
    assert 0.002 < model.trainable_fraction() < 0.01


def test_methods_check_the_access_level(micro: SealedBackbone) -> None:
    with pytest.raises(SealedError, match="method 'lga' needs access level 'gray\\+'"):
        build_model(micro, "lga")
    with pytest.raises(SealedError, match="needs access level 'white'"):
        build_model(micro, "full")
    with pytest.raises(ValueError, match="unknown method 'lora2'"):
        build_model(micro, "lora2")
    assert {"zero-shot", "output", "dga", "lga", "full"} <= set(METHODS)


def test_state_dict_holds_only_adapter_tensors(micro: SealedBackbone) -> None:
    state = build_model(micro, "dga").state_dict()
    assert all(k.split(".")[0] in {"image_in", "text_in", "image_out", "text_out"} for k in state)
    assert sum(v.numel() for v in state.values()) < 0.01 * micro.interface.parameter_count
