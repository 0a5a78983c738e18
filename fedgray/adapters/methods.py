"""What a site trains, by name: a small registry of builders over a sealed backbone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedgray.adapters.model import AdaptedCLIP
from fedgray.adapters.modules import (
    DeepPrompts,
    ImageInputAdapter,
    OutputAdapter,
    TextInputAdapter,
)
from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.sealed import SealedBackbone

_RANK = {AccessLevel.BLACK: 0, AccessLevel.GRAY: 1, AccessLevel.GRAY_PLUS: 2, AccessLevel.WHITE: 3}


@dataclass(frozen=True)
class Method:
    """A trainable configuration around the backbone and the access it needs."""

    name: str
    level: AccessLevel
    description: str
    build: Callable[[SealedBackbone, int], AdaptedCLIP]


def _zero_shot(backbone: SealedBackbone, _: int) -> AdaptedCLIP:
    return AdaptedCLIP(backbone)


def _output(backbone: SealedBackbone, _: int) -> AdaptedCLIP:
    dim = backbone.interface.embed_dim
    return AdaptedCLIP(backbone, image_out=OutputAdapter(dim), text_out=OutputAdapter(dim))


def _dga(backbone: SealedBackbone, _: int) -> AdaptedCLIP:
    i = backbone.interface
    return AdaptedCLIP(
        backbone,
        image_in=ImageInputAdapter(),
        text_in=TextInputAdapter(i.token_width),
        image_out=OutputAdapter(i.embed_dim),
        text_out=OutputAdapter(i.embed_dim),
    )


def _lga(backbone: SealedBackbone, prompt_tokens: int) -> AdaptedCLIP:
    model = _dga(backbone, prompt_tokens)
    points = {p.tower: p for p in backbone.interface.entry_points}
    model.image_prompts = DeepPrompts(
        layers=points["image"].layers, width=points["image"].width, count=prompt_tokens
    )
    model.text_prompts = DeepPrompts(
        layers=points["text"].layers, width=points["text"].width, count=prompt_tokens
    )
    return model


def _full(backbone: SealedBackbone, _: int) -> AdaptedCLIP:
    return AdaptedCLIP(backbone, white_module=backbone.module.requires_grad_(True))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zero-shot", AccessLevel.BLACK, "the bare backbone, nothing trained", _zero_shot),
        Method("output", AccessLevel.GRAY, "output adapters only", _output),
        Method("dga", AccessLevel.GRAY, "DGA: input + output adapters (gray-box)", _dga),
        Method("lga", AccessLevel.GRAY_PLUS, "LGA: DGA + per-layer tokens (gray+)", _lga),
        Method("full", AccessLevel.WHITE, "full fine-tuning (white-box baseline)", _full),
    )
}


def build_model(backbone: SealedBackbone, method: str, *, prompt_tokens: int = 2) -> AdaptedCLIP:
    """Build ``method``'s trainable model around ``backbone``, checking its access level."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    spec = METHODS[method]
    if _RANK[backbone.level] < _RANK[spec.level]:
        raise SealedError(
            f"method '{method}' needs access level '{spec.level.value}', "
            f"the backbone is sealed at '{backbone.level.value}'"
        )
    return spec.build(backbone, prompt_tokens)
