"""Every open_clip tower family seals at black and gray: tiny random-weight variants of ViT,
ModifiedResNet (RN50's shape), timm (convnext) and custom-text (SigLIP's shape: a timm ViT
image tower, a bidirectional text tower pooled at its last slot), built from configs here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from fedgray.adapters import build_model
from fedgray.backbone import IsolatedBackbone, SealedBackbone, SealedError, load_artifact
from fedgray.backbone.artifact import open_artifact
from fedgray.backbone.families import FamilyError, describe, image_family, support
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, open_clip_module
from fedgray.backbone.runtime.serve import check_inputs
from fedgray.backbone.runtime.wire import WireError
from fedgray.cli import main
from fedgray.config import PretrainConfig
from fedgray.owner.keys import KeyFiles, generate_keys
from tests.helpers import (
    TINY_SIGLIP,
    TINY_TEXT,
    assert_adapters_start_as_zero_shot,
    assert_close,
    assert_gradients_reach_every_adapter,
    image_and_tokens,
    perturbed,
    reduction_terms,
    register_model_configs,
    seal_with_cli,
)

CAPTIONS = ["a red circle", "the digit 7 in blue"]
CONFIGS = {
    "fgt-vit": {
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": TINY_TEXT,
    },
    "fgt-resnet": {  # RN50's ModifiedResNet: stem, 4 bottleneck stages, attention pool
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
        "text_cfg": TINY_TEXT,
    },
    "fgt-convnext": {  # convnext_base's timm tower, with timm's test-sized ConvNeXt
        "vision_cfg": {"timm_model_name": "test_convnext", "timm_pool": "", "image_size": 32},
        "text_cfg": TINY_TEXT,
    },
    "fgt-customtext": TINY_SIGLIP,  # open_clip's tokenizer here; test_hf_tokenizer.py: HF's
}
FAMILIES = {  # name -> (image family, text family, towers a gray+ site may enter)
    "fgt-vit": ("vit", "clip-text", ("image", "text")),
    "fgt-resnet": ("modified-resnet", "clip-text", ("text",)),
    "fgt-convnext": ("timm", "clip-text", ("text",)),
    "fgt-customtext": ("timm", "custom-text", ("image", "text")),  # a timm ViT's blocks
}
NAMES = list(CONFIGS)


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> None:
    register_model_configs(tmp_path_factory.mktemp("model_configs"), CONFIGS)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    built = {}
    for name in NAMES:
        torch.manual_seed(0)
        built[name] = create_clip(name, None)
    return built


def _sealed(models: dict[str, nn.Module], name: str, level: str) -> SealedBackbone:
    return SealedBackbone(models[name], get_tokenizer(name), name=name, level=level)


def _inputs(backbone: SealedBackbone | IsolatedBackbone) -> tuple[torch.Tensor, torch.Tensor]:
    return image_and_tokens(backbone, CAPTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_each_family_publishes_its_towers_and_entry_points(
    models: dict[str, nn.Module], name: str
) -> None:
    image, text, towers = FAMILIES[name]
    gray, plus = _sealed(models, name, "gray"), _sealed(models, name, "gray+")
    assert (gray.interface.image_family, gray.interface.text_family) == (image, text)
    assert gray.interface.entry_points == ()
    assert tuple(p.tower for p in plus.interface.entry_points) == towers
    # The config alone says the same (what `fedgray info` prints).
    said = support(open_clip_module().get_model_config(name))
    assert (said.image, said.text, said.entry_towers) == (image, text, towers)
    assert said.levels == ("black", "gray", "gray+", "white")


@pytest.mark.parametrize(
    ("name", "level", "method"),
    [*((n, "gray", "dga") for n in NAMES), *((n, "gray+", "lga") for n in NAMES)],
)
def test_adapters_at_initialisation_are_the_zero_shot_model(
    models: dict[str, nn.Module], name: str, level: str, method: str
) -> None:
    assert_adapters_start_as_zero_shot(_sealed(models, name, level), method, models[name], CAPTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_adapter_and_no_weight(
    models: dict[str, nn.Module], name: str
) -> None:
    assert_gradients_reach_every_adapter(_sealed(models, name, "gray+"), CAPTIONS)


@pytest.mark.parametrize("name", ["fgt-resnet", "fgt-convnext"])
def test_gray_plus_on_a_tower_without_blocks_is_one_line(
    models: dict[str, nn.Module], name: str
) -> None:
    plus = _sealed(models, name, "gray+")
    pixels, _ = _inputs(plus)
    prompts, gates = torch.zeros(2, 1, 1, 32), torch.zeros(2, 1, 1)
    family = FAMILIES[name][0]
    with pytest.raises(SealedError) as refused:
        plus.encode_image(pixels, prompts=prompts, gates=gates)
    assert str(refused.value) == (
        f"the image tower of '{name}' ({family}) has no transformer blocks to enter: "
        "no gray+ entry point there"
    )
    assert build_model(plus, "lga").image_prompts is None
    # The isolated runtime checks requests against the same interface before the model.
    request = {"pixels": pixels, "prompts": prompts, "gates": gates}
    with pytest.raises(WireError, match=rf"the image tower of '{name}' \({family}\) publishes no"):
        check_inputs(plus.interface, "image", request)


@pytest.mark.parametrize("name", NAMES)
def test_black_answers_detached_outputs(models: dict[str, nn.Module], name: str) -> None:
    black = _sealed(models, name, "black")
    pixels, tokens = _inputs(black)
    out = black.encode_image(pixels.requires_grad_(True))
    assert out.grad_fn is None and black.encode_text(tokens).grad_fn is None
    assert black.queries_used == 2


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("name", NAMES)
def test_fedgray_seal_round_trip(keys: KeyFiles, tmp_path: Path, name: str) -> None:
    path = seal_with_cli(name, keys, tmp_path / f"{name}.fgs")
    files = {"verify_key": keys.verify_key, "content_key": keys.content_key}
    manifest, model = open_artifact(path, **files)
    torch.manual_seed(PretrainConfig().seed)  # what `fedgray seal --pretrained none` built
    expected = create_clip(name, None).state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    towers = FAMILIES[name][2]
    assert tuple(e["tower"] for e in manifest.entry_points) == towers
    backbone = load_artifact(path, level="gray", **files)
    assert backbone.interface.image_family == FAMILIES[name][0]


@pytest.fixture(scope="module")
def artifacts(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    return {name: seal_with_cli(name, keys, folder / f"{name}.fgs") for name in NAMES}


ISOLATED = NAMES[1:]  # ViT's runtime is compared in test_runtime.py


@pytest.fixture(scope="module")
def isolated(keys: KeyFiles, artifacts: dict[str, Path]) -> Iterator[dict[str, IsolatedBackbone]]:
    """One runtime process per family, started together (their imports overlap). The tiny
    configs are not registered there: the artifact's signed config builds model and tokenizer."""
    files = {"verify_key": keys.verify_key, "content_key": keys.content_key}

    def start(name: str) -> IsolatedBackbone:
        return IsolatedBackbone(artifacts[name], threads=1, level="gray", **files)

    with ThreadPoolExecutor(len(ISOLATED)) as pool:
        runtimes = dict(zip(ISOLATED, pool.map(start, ISOLATED), strict=True))
    yield runtimes
    for runtime in runtimes.values():
        runtime.close()


@pytest.mark.parametrize("name", ISOLATED)
def test_isolated_runtime_equals_in_process(
    keys: KeyFiles,
    artifacts: dict[str, Path],
    isolated: dict[str, IsolatedBackbone],
    name: str,
) -> None:
    files = {"verify_key": keys.verify_key, "content_key": keys.content_key}
    local, remote = load_artifact(artifacts[name], level="gray", **files), isolated[name]
    assert remote.interface == local.interface
    pixels, tokens = _inputs(local)
    assert torch.equal(remote.tokenize(CAPTIONS), tokens)
    results = []
    for backbone in (local, remote):
        model = perturbed(backbone, "dga", seed=3)
        x = pixels.clone().requires_grad_(True)
        image, text = model(x, tokens)
        (image @ text.T).logsumexp(-1).sum().backward()
        results.append(
            [image.detach(), text.detach(), x.grad, *(p.grad for p in model.parameters())]
        )
    for got, expected in zip(results[1], results[0], strict=True):
        assert_close(got, expected, terms=reduction_terms(local))


def test_an_unknown_tower_is_one_line_naming_it(models: dict[str, nn.Module]) -> None:
    class Odd(nn.Module):
        visual = nn.Identity()

    with pytest.raises(FamilyError, match="the image tower Identity is not a family fedgray"):
        image_family(Odd())
    hf = {"vision_cfg": {"image_size": 224}, "text_cfg": {"hf_model_name": "xlm-roberta-base"}}
    assert support(hf).problem == "no family for the text tower HFTextEncoder"
    assert support(hf).levels == ()
    assert describe(models["fgt-vit"]).reserves_slot  # causal: a slot after end-of-text
    assert not describe(models["fgt-customtext"]).reserves_slot


def test_a_missing_hf_tokenizer_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the hf-text extra (transformers is in [dev], so its absence is simulated: a
    None in sys.modules fails the import), by name and from an artifact's signed config."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(BackboneLoadError, match=r"'ViT-B-16-SigLIP' needs .*\.\[hf-text\]"):
        get_tokenizer("ViT-B-16-SigLIP")
    signed = open_clip_module().get_model_config("ViT-B-16-SigLIP")
    with pytest.raises(BackboneLoadError, match=r"'fgt-unknown' needs .*\(transformers\).*hf-text"):
        get_tokenizer("fgt-unknown", signed)


def test_fedgray_info_lists_families_and_levels(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "modified-resnet" in lines["RN50"] and "gray+ (text)" in lines["RN50"]
    assert "timm" in lines["convnext_base"]
    assert "vit" in lines["ViT-L-14"] and "gray+ (image, text)" in lines["ViT-L-14"]
    assert "custom-text" in lines["ViT-B-16-SigLIP"]
    assert "not supported" in lines["xlm-roberta-base-ViT-B-32"]
    assert "in-process" in lines and "not a boundary" in lines["in-process"]
    assert "isolated" in lines and "not a boundary" in lines["isolated"]
    assert "the boundary against the site's code" in lines["runtime"]
