"""Backbone families: how fedgray runs each kind of open_clip tower, as data.

open_clip builds its image tower from one of three classes (``VisionTransformer``,
``ModifiedResNet`` for RN50/RN101, ``TimmModel`` for convnext and other timm trunks) and keeps
its text transformer either on the ``CLIP`` itself or in a ``text`` submodule
(``CustomTextCLIP``: SigLIP and friends). Each family is one registry entry keyed by that
class name: a small function that runs the tower with the gray-box inputs, and whether it
has transformer blocks a ``gray+`` site may enter. DGA needs only pixels and token
embeddings, so every registered family runs at ``black`` and ``gray``; entry points are
published per tower, only where the blocks are open_clip's default ones or timm's
standard ViT blocks (SigLIP's image tower).

The same keys classify a model config without building it (:func:`support`), which is what
``fedgray info`` prints. Hugging Face text towers (``HFTextEncoder``) and CoCa's class-token
text tower are not registered: they are refused with one line naming the tower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedgray.backbone import encoders, trim
from fedgray.backbone.encoders import TextParts, enterable

ImageEncode = Callable[[Any, torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]
TOWERS = ("image", "text")  # in the order entry points are published
# open_clip swaps in its custom attention block when any of these is set (no fused MHA).
CUSTOM_BLOCK_KEYS = (
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
)
POOLS = ("argmax", "eos", "last", "first")


class FamilyError(ValueError):
    """A model whose towers fedgray has no family for."""


@dataclass(frozen=True)
class ImageFamily:
    """How fedgray runs one class of open_clip image tower."""

    name: str
    encode: ImageEncode
    blocks: Callable[[Any], tuple[int, int] | None]  # (layers, width) a gray+ site enters
    blocks_in_config: Callable[[Mapping[str, Any]], bool]  # the same question, of a config


@dataclass(frozen=True)
class TextFamily:
    """How fedgray finds one kind of text tower's pieces."""

    name: str
    parts: Callable[[Any], TextParts]


def _default_blocks(cfg: Mapping[str, Any]) -> bool:
    return cfg.get("block_type") in (None, "default") and not any(
        cfg.get(k) for k in CUSTOM_BLOCK_KEYS
    )


def _blocks(transformer: Any) -> tuple[int, int] | None:
    """(layers, width) of an open_clip transformer a site may enter, else None."""
    return (len(transformer.resblocks), int(transformer.width)) if enterable(transformer) else None


def _vit_blocks(visual: Any) -> tuple[int, int] | None:
    return _blocks(visual.transformer)


def _timm_blocks(visual: Any) -> tuple[int, int] | None:
    if not encoders.timm_enterable(visual):
        return None
    return len(visual.trunk.blocks), int(visual.trunk.embed_dim)


def _timm_vit_in_config(vision: Mapping[str, Any]) -> bool:
    """A timm trunk built by timm's vision_transformer module (SigLIP's); whether its blocks
    are the standard ones is checked again on the built model."""
    from timm.models import model_entrypoint

    try:
        module = model_entrypoint(str(vision["timm_model_name"])).__module__
    except (KeyError, RuntimeError):
        return False
    return module == "timm.models.vision_transformer"


def _none(_: Any) -> None:
    return None


def _never(_: Mapping[str, Any]) -> bool:
    return False


IMAGE_FAMILIES: dict[str, ImageFamily] = {
    "VisionTransformer": ImageFamily("vit", encoders.encode_vit, _vit_blocks, _default_blocks),
    "ModifiedResNet": ImageFamily("modified-resnet", encoders.encode_plain, _none, _never),
    "TimmModel": ImageFamily("timm", encoders.encode_timm, _timm_blocks, _timm_vit_in_config),
}


def _checked(parts: TextParts, tower: str) -> TextParts:
    if parts.pool not in POOLS:
        raise FamilyError(f"text tower {tower}: pooling '{parts.pool}' is not one of {POOLS}")
    return parts


def _clip_parts(model: Any) -> TextParts:
    """CLIP keeps the text transformer's pieces on the model itself."""
    parts = TextParts(
        embedding=model.token_embedding,
        positional=model.positional_embedding,
        transformer=model.transformer,
        ln_final=model.ln_final,
        projection=model.text_projection,
        attn_mask=model.attn_mask,
        pool=model.text_pool_type,
        eos_id=getattr(model, "text_eos_id", None),
    )
    return _checked(parts, "CLIP")


def _custom_parts(model: Any) -> TextParts:
    """CustomTextCLIP (SigLIP) holds a TextTransformer; CoCa's class token is not run."""
    text = model.text
    if text.cls_emb is not None or text.use_pad_mask:
        raise FamilyError(
            f"text tower {type(text).__name__} of {type(model).__name__}: a class token or "
            "padding mask (CoCa) is not a family fedgray runs"
        )
    parts = TextParts(
        embedding=text.token_embedding,
        positional=text.positional_embedding,
        transformer=text.transformer,
        ln_final=text.ln_final,
        projection=text.text_projection,
        attn_mask=text.attn_mask,
        pool=text.pool_type,
        eos_id=text.eos_id,
    )
    return _checked(parts, "TextTransformer")


TEXT_FAMILIES: dict[str, TextFamily] = {
    "CLIP": TextFamily("clip-text", _clip_parts),
    "TextTransformer": TextFamily("custom-text", _custom_parts),
}


def _lookup(registry: Mapping[str, Any], key: str, tower: str) -> Any:
    if key not in registry:
        names = ", ".join(registry)
        raise FamilyError(f"the {tower} tower {key} is not a family fedgray runs (known: {names})")
    return registry[key]


def _text_key(model: Any) -> str:
    text = getattr(model, "text", None)
    return type(text).__name__ if isinstance(text, nn.Module) else type(model).__name__


def image_family(model: Any) -> ImageFamily:
    """The registered family of ``model.visual``; one line naming the tower otherwise."""
    return _lookup(IMAGE_FAMILIES, type(model.visual).__name__, "image")


def text_family(model: Any) -> TextFamily:
    """The registered family of the model's text tower; one line naming it otherwise."""
    return _lookup(TEXT_FAMILIES, _text_key(model), "text")


def text_parts(model: Any) -> TextParts:
    """The text tower's pieces, wherever the model class keeps them."""
    return text_family(model).parts(model)


def encode_image(
    model: Any,
    pixels: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    prompts: torch.Tensor | None = None,
    gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image features [B, D] of pixels [B, 3, H, W] in [0, 1], by the tower's family."""
    x = (pixels - mean) / std
    return image_family(model).encode(model.visual, x, prompts, gates)


def encode_text(model: Any, tokens: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
    """Text features [B, D]: trimmed to the longest caption where that is exact
    (:mod:`fedgray.backbone.trim`); else, with no adapter input, open_clip's own pass."""
    parts = text_parts(model)
    if trim.trimmable(parts):
        parts, tokens = trim.trim(parts, tokens)
        return encoders.encode_text(parts, tokens, **inputs)
    if all(v is None for v in inputs.values()):
        out: torch.Tensor = model.encode_text(tokens)
        return out
    return encoders.encode_text(parts, tokens, **inputs)


@dataclass(frozen=True)
class Shapes:
    """What the families say about a built model: shapes and towers, never weights."""

    image_family: str
    text_family: str
    image_size: int
    embed_dim: int
    context_length: int
    token_width: int
    vocab_size: int  # token ids are 0 to vocab_size - 1
    blocks: dict[str, tuple[int, int]]  # tower -> (layers, width), where a site may enter
    reserves_slot: bool  # the tokenizer keeps a free slot after end-of-text


def _embed_dim(parts: TextParts) -> int:
    projection = parts.projection
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    return int(parts.embedding.weight.shape[1])


def describe(model: Any) -> Shapes:
    """The shapes and families of ``model``; :class:`FamilyError` for unknown towers."""
    image, text = image_family(model), text_family(model)
    parts = text.parts(model)
    towers = {"image": image.blocks(model.visual), "text": _blocks(parts.transformer)}
    blocks = {tower: shape for tower, shape in towers.items() if shape is not None}
    size = model.visual.image_size
    return Shapes(
        image_family=image.name,
        text_family=text.name,
        image_size=int(size if isinstance(size, int) else size[0]),
        embed_dim=_embed_dim(parts),
        context_length=int(parts.positional.shape[0]),
        token_width=int(parts.embedding.weight.shape[1]),
        vocab_size=int(parts.embedding.weight.shape[0]),
        blocks=blocks,
        reserves_slot=parts.one_pass,
    )


@dataclass(frozen=True)
class Support:
    """What a model config offers, read from the config alone (``fedgray info``)."""

    image: str  # family name, or the unsupported tower class
    text: str
    entry_towers: tuple[str, ...]  # towers with blocks a gray+ site may enter
    problem: str | None = None  # why the model cannot be sealed, when it cannot

    @property
    def levels(self) -> tuple[str, ...]:
        """Access levels a sealed model of this config offers."""
        if self.problem is not None:
            return ()
        return ("black", "gray", *(("gray+",) if self.entry_towers else ()), "white")


def _image_key(vision: Mapping[str, Any]) -> str:
    if vision.get("timm_model_name"):
        return "TimmModel"
    return "ModifiedResNet" if isinstance(vision.get("layers"), list) else "VisionTransformer"


def _text_key_of_config(cfg: Mapping[str, Any]) -> str:
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name"):
        return "HFTextEncoder"
    if "multimodal_cfg" in cfg or text.get("embed_cls"):
        return "CoCa"
    return "TextTransformer" if cfg.get("custom_text") else "CLIP"


def support(model_cfg: Mapping[str, Any]) -> Support:
    """Classify an open_clip model config (its ``model_cfg`` dict) by the registries."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    image_key, text_key = _image_key(vision), _text_key_of_config(model_cfg)
    image, txt = IMAGE_FAMILIES.get(image_key), TEXT_FAMILIES.get(text_key)
    towers = [
        ("image", image is not None and image.blocks_in_config(vision)),
        ("text", txt is not None and _default_blocks(text)),
    ]
    missing = [
        f"{t} tower {k}"
        for t, k, f in (("image", image_key, image), ("text", text_key, txt))
        if f is None
    ]
    return Support(
        image=image.name if image is not None else image_key,
        text=txt.name if txt is not None else text_key,
        entry_towers=tuple(t for t, ok in towers if ok),
        problem=f"no family for the {' and '.join(missing)}" if missing else None,
    )
