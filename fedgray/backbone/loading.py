"""Load open_clip backbones: by name with a pretrained tag, a local checkpoint, or built in.

``pretrained`` may be
- an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``...), resolved by open_clip
  (this needs its hub, which is unreachable offline);
- a path to a local checkpoint file (a state dict saved with ``torch.save`` or
  open_clip's formats);
- ``"fedgray-world"``: the built-in owner's model, pretrained on the benchmark's source
  domain and cached under the user cache directory (see :mod:`fedgray.owner.pretrain`);
- ``None``: random initialisation (scale benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from fedgray.backbone.access import AccessLevel
from fedgray.backbone.sealed import SealedBackbone
from fedgray.vision_ops import ensure_torchvision

BUILTIN_TAG = "fedgray-world"
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


class BackboneLoadError(RuntimeError):
    """A backbone could not be created or its weights could not be loaded."""


@cache
def open_clip_module():  # noqa: ANN201 - the open_clip module
    """Import open_clip (after the torchvision workaround) with fedgray's configs registered."""
    ensure_torchvision()
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


def builtin_models() -> list[str]:
    """Names of the model configs that ship with fedgray."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def _looks_like_path(pretrained: str) -> bool:
    return any(s in pretrained for s in ("/", "\\")) or Path(pretrained).suffix in {
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
        ".npz",
    }


def create_clip(name: str, pretrained: str | Path | None) -> nn.Module:
    """Create the open_clip model ``name`` and load ``pretrained`` weights (see module doc)."""
    open_clip = open_clip_module()
    if name not in open_clip.list_models():
        raise BackboneLoadError(f"unknown open_clip model '{name}'")
    if isinstance(pretrained, Path) or (pretrained and _looks_like_path(pretrained)):
        path = Path(pretrained)
        if not path.is_file():
            raise BackboneLoadError(f"checkpoint file not found: {path}")
        pretrained = str(path)
    try:
        return open_clip.create_model(name, pretrained=pretrained, require_pretrained=False)
    except Exception as error:  # noqa: BLE001 - reported as one line naming the source
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackboneLoadError(
            f"could not load weights '{pretrained}' for '{name}': {first}"
        ) from None


def get_tokenizer(name: str) -> Callable[..., torch.Tensor]:
    """open_clip's tokenizer for model ``name`` (the BPE vocabulary ships with open_clip)."""
    return open_clip_module().get_tokenizer(name)


def load_sealed(
    name: str,
    pretrained: str | Path | None,
    *,
    level: AccessLevel | str = AccessLevel.GRAY,
    query_budget: int | None = None,
) -> SealedBackbone:
    """Create and seal a backbone; ``pretrained='fedgray-world'`` needs :func:`resolve_builtin`."""
    model = create_clip(name, pretrained)
    return SealedBackbone(
        model, get_tokenizer(name), name=name, level=level, query_budget=query_budget
    )
