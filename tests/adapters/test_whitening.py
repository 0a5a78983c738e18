"""``method.whiten`` and ``method.text_subspace``: the image output adapter shaped by public
statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedgray.adapters import build_model, whitening
from fedgray.adapters.modules import WhitenedOutputAdapter
from fedgray.backbone import SealedBackbone
from fedgray.config import ConfigError, MethodConfig
from fedgray.resolver import load_config
from tests.helpers import MICRO, assert_close

pytestmark = pytest.mark.usefixtures("small_whitening_sample")
WHITENED = MethodConfig(name="dga", whiten="world/photo")


def test_whitened_adapters_start_as_the_bare_backbone_bit_for_bit(micro: SealedBackbone) -> None:
    plain, whitened = build_model(micro, "dga"), build_model(micro, WHITENED)
    assert isinstance(whitened.image_out, WhitenedOutputAdapter)
    pixels = torch.rand(4, 3, micro.interface.image_size, micro.interface.image_size)
    with torch.no_grad():
        assert torch.equal(whitened.encode_images(pixels), plain.encode_images(pixels))


def test_the_whitening_whitens_the_public_features(micro: SealedBackbone) -> None:
    features, _texts = whitening._features(micro, "world/photo")
    assert features.shape == (whitening.SAMPLES, micro.interface.embed_dim)
    x = F.normalize(features.double(), dim=-1)
    moment = x.T @ x / len(x)
    p = whitening.public_statistics(micro, "world/photo").whitening.double()
    mean = torch.linalg.eigvalsh(moment).mean()
    whitened = p @ moment @ p
    # p is float32 (an eigendecomposition of the moment): its rounding, not float64's, bounds this
    assert_close(
        whitened,
        mean * torch.eye(len(p), dtype=torch.float64),
        terms=len(p) ** 2,
        dtype=torch.float32,
    )
    assert torch.linalg.cond(moment) > 10  # there was something to whiten


def test_the_whitening_is_public_state_computed_alike_and_never_sent(micro: SealedBackbone) -> None:
    first, second = build_model(micro, WHITENED), build_model(micro, WHITENED)
    assert first.image_out is not None and second.image_out is not None
    assert torch.equal(first.image_out.whitening, second.image_out.whitening)
    whitening._STATISTICS.clear()  # recomputed from scratch: the same matrix
    again = build_model(micro, WHITENED).image_out
    assert again is not None and torch.equal(again.whitening, first.image_out.whitening)
    state = first.state_dict()
    assert {k for k in state if k.startswith("image_out.")} == {
        "image_out.delta.weight",
        "image_out.delta.bias",
    }
    trained = [n for n, p in first.named_parameters() if p.requires_grad]
    assert "image_out.delta.weight" in trained and not any("whitening" in n for n in trained)


def test_a_gradient_step_moves_the_weak_input_directions_as_much_as_the_strong(
    micro: SealedBackbone,
) -> None:
    """What the whitening is for: inputs with a skewed spectrum (energy 1 to 1e-6) and a
    target map off the identity. A plain step corrects the map almost only along the strong
    input directions; a whitened one along all of them alike."""
    torch.manual_seed(0)
    dim = micro.interface.embed_dim
    scales = torch.logspace(0, -3, dim)
    x = torch.linalg.qr(torch.randn(4096, dim)).Q * 64 * scales  # second moment diag(scales^2)
    target = x @ (torch.eye(dim) + 0.1 * torch.randn(dim, dim)).T
    exact = torch.diag(scales.reciprocal()) * scales.pow(2).mean().sqrt()
    moved = {}
    for name, p in (("plain", torch.eye(dim)), ("whitened", exact)):
        adapter = WhitenedOutputAdapter(p)
        (adapter(x) - target).pow(2).sum(-1).mean().backward()
        assert adapter.delta.weight.grad is not None
        step = -adapter.delta.weight.grad @ p  # the step's change of the map x -> y
        moved[name] = step.norm(dim=0)  # per input direction
    ratio = {k: float(v[-8:].mean() / v[:8].mean()) for k, v in moved.items()}
    assert ratio["plain"] < 1e-3 and 0.5 < ratio["whitened"] < 2


def test_whiten_needs_a_linear_image_output_adapter(micro: SealedBackbone) -> None:
    with pytest.raises(ValueError, match=r"^method.whiten: method 'output-scale' has no linear"):
        build_model(micro, MethodConfig(name="output-scale", whiten="world/photo"))


def test_the_text_subspace_confines_the_correction_to_the_public_captions_leading_span(
    micro: SealedBackbone,
) -> None:
    config = MethodConfig(name="output", whiten="world/photo", text_subspace=3)
    adapter = build_model(micro, config).image_out
    assert isinstance(adapter, WhitenedOutputAdapter)
    dim = micro.interface.embed_dim
    assert adapter.delta.weight.shape == (3, dim)
    basis = adapter.basis
    assert_close(basis.T @ basis, torch.eye(3), terms=dim)
    _images, texts = whitening._features(micro, "world/photo")
    captions = F.normalize(texts, dim=-1)
    energy = (captions @ basis).pow(2).sum() / captions.pow(2).sum()
    leading = torch.linalg.svdvals(captions.double()).pow(2)
    assert float(energy) == pytest.approx(float(leading[:3].sum() / leading.sum()), abs=1e-4)
    with torch.no_grad():
        adapter.delta.weight.normal_()
        adapter.delta.bias.normal_()
        x = torch.randn(5, dim)
        correction = adapter(x) - x
    assert correction.abs().sum() > 0
    outside = correction - correction @ basis @ basis.T
    assert outside.abs().max() < 1e-4 * correction.abs().max()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"text_subspace": 3}, r"^method.text_subspace: needs method.whiten"),
        (
            {"whiten": "world/photo", "text_subspace": 10_000},
            r"^method.text_subspace: 10000 exceeds",
        ),
    ],
)
def test_text_subspace_errors_name_the_field(
    micro: SealedBackbone, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(micro, MethodConfig(name="output", **options))  # type: ignore[arg-type]


def test_whiten_names_a_known_dataset() -> None:
    with pytest.raises(ConfigError, match=r"method.whiten: unknown dataset 'world/nowhere'"):
        load_config(None, [*MICRO, "method.whiten=world/nowhere"])
