"""Loading open_clip backbones: built-in configs, local checkpoints, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from fedgray.backbone import BackboneLoadError, create_clip, load_sealed
from fedgray.backbone.loading import builtin_models


def test_builtin_configs_are_registered() -> None:
    assert {"fedgray-tiny", "fedgray-micro"} <= set(builtin_models())
    model = create_clip("fedgray-micro", None)
    assert model.visual.image_size[0] == 32


def test_random_weights_asked_for_bring_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.DEBUG):
        create_clip("fedgray-micro", None)
        load_sealed("fedgray-micro", None, level="gray")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert logging.getLogger().handlers == handlers  # and no handler left on stderr
    assert not logging.getLogger().filters


def test_local_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_clip("fedgray-micro", None)
    path = tmp_path / "owner.pt"
    torch.save(source.state_dict(), path)
    sealed = load_sealed("fedgray-micro", str(path), level="gray")
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval().encode_image(
            (pixels - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1))
            / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        )
        assert torch.equal(sealed.encode_image(pixels), expected)


@pytest.mark.parametrize(
    ("name", "pretrained", "message"),
    [
        ("fedgray-micro", "/nowhere/weights.pt", "checkpoint file not found: /nowhere/weights.pt"),
        ("no-such-model", None, "unknown open_clip model 'no-such-model'"),
    ],
)
def test_clear_errors(name: str, pretrained: str | None, message: str) -> None:
    with pytest.raises(BackboneLoadError, match=message) as caught:
        create_clip(name, pretrained)
    assert "\n" not in str(caught.value)


def test_corrupt_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneLoadError, match="could not load weights") as caught:
        create_clip("fedgray-micro", str(path))
    assert "\n" not in str(caught.value)


def test_unreachable_hub_tag_is_one_line() -> None:
    with pytest.raises(
        BackboneLoadError, match="could not load weights 'laion2b_s34b_b79k' for 'ViT-B-32'"
    ):
        create_clip("ViT-B-32", "laion2b_s34b_b79k")
