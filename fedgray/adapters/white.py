"""White-box baselines' trainable parts: LoRA factors and the last transformer blocks.

These need the open_clip model itself (``SealedBackbone.module``, level ``white``) and
exist only to compare the restricted-access methods against.

LoRA (Hu et al., 2021) is attached as a weight *parametrization*, ``W + (alpha / r) B A``,
rather than by wrapping a layer's forward: open_clip's blocks use ``nn.MultiheadAttention``,
which reads ``in_proj_weight`` and ``out_proj.weight`` directly in
``F.multi_head_attention_forward`` and never calls ``out_proj``'s forward. A
parametrization is seen by every such read, so one small module covers the attention's
fused query/key/value projection, its output projection and both MLP layers alike. ``B``
starts at zero, so at initialisation every weight equals the backbone's, bit for bit.

By default only ``B`` is trained (FFA-LoRA, Sun et al., ICLR 2024): ``A`` is frozen at a
random draw from a fixed seed (:data:`DOWN_SEED`), the same in every process, and is a
buffer outside the state, so it is never sent. The update ``scale * B A`` is then linear
in ``B``, and FedAvg of the sites' ``B`` is exactly the mean of their weight updates;
averaging trained ``A`` and ``B`` separately is not (the mean of products is not the
product of means). ``train_down=True`` trains both factors (Hu et al.).

A backbone carries one LoRA at a time: attaching replaces the LoRA attached before (a
process that builds a model per site and round on one shared backbone would otherwise
stack every earlier site's update under the new one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from fedgray.config_schema import positive

# (submodule path inside a residual block, weight name): every linear map of the block.
LORA_TARGETS = (
    ("attn", "in_proj_weight"),
    ("attn.out_proj", "weight"),
    ("mlp.c_fc", "weight"),
    ("mlp.c_proj", "weight"),
)


@dataclass
class LoraConfig:
    """LoRA (method ``lora``): ``rank`` and scale (``alpha / rank``) of the factors;
    ``train_a``: train the ``A`` factor too (Hu et al.; federated, FedAvg of both factors is
    then not the mean of the updates), by default FFA-LoRA: ``A`` frozen at a fixed random
    draw, only ``B`` trained and sent."""

    SECTION: ClassVar[str] = "lora"

    rank: int = field(default=4, metadata=positive())
    alpha: float = field(default=8.0, metadata=positive())
    train_a: bool = False


@dataclass
class LastLayersConfig:
    """Method ``last-layers``: the ``blocks`` per tower it trains (the last ones)."""

    SECTION: ClassVar[str] = "last_layers"

    blocks: int = field(default=1, metadata=positive())


DOWN_SEED = 0
"""Seed of the random ``A`` factors: part of what a trained ``B`` means, so fixed."""


class LoRA(nn.Module):
    """A low-rank update ``weight + scale * up @ down`` applied as a parametrization.

    ``down`` (``A``) is drawn from ``generator``; it is a trained parameter with
    ``train_down``, else a frozen buffer left out of the state dict.
    """

    down: torch.Tensor

    def __init__(
        self,
        out_features: int,
        in_features: int,
        *,
        rank: int,
        alpha: float,
        generator: torch.Generator | None = None,
        train_down: bool = False,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.scale = alpha / rank
        down = torch.empty(rank, in_features)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
        if train_down:
            self.down = nn.Parameter(down)
        else:
            self.register_buffer("down", down, persistent=False)
        self.up = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The adapted weight (equal to ``weight`` while ``up`` is zero)."""
        return weight + self.scale * (self.up @ self.down)


def towers(model: nn.Module) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The residual blocks of the image and the text tower of an open_clip ``CLIP``."""
    clip: Any = model  # open_clip ships no types: its submodules are untyped
    return clip.visual.transformer.resblocks, clip.transformer.resblocks


def _blocks(model: nn.Module) -> Iterator[nn.Module]:
    for blocks in towers(model):
        yield from blocks


def attach_lora(
    model: nn.Module, *, rank: int, alpha: float, train_down: bool = False
) -> nn.ModuleList:
    """Put LoRA on every linear map of both towers' blocks, replacing any LoRA there;
    return the factors. ``A`` comes from :data:`DOWN_SEED`, so every call draws the same."""
    generator = torch.Generator().manual_seed(DOWN_SEED)
    factors = nn.ModuleList()
    for block in _blocks(model):
        for path, name in LORA_TARGETS:
            owner = block.get_submodule(path)
            if parametrize.is_parametrized(owner, name):
                parametrize.remove_parametrizations(owner, name, leave_parametrized=False)
            out_features, in_features = getattr(owner, name).shape
            lora = LoRA(
                out_features,
                in_features,
                rank=rank,
                alpha=alpha,
                generator=generator,
                train_down=train_down,
            )
            parametrize.register_parametrization(owner, name, lora)
            factors.append(lora)
    return factors


def last_blocks(model: nn.Module, count: int) -> nn.ModuleList:
    """The last ``count`` residual blocks of each tower, made trainable."""
    selected = nn.ModuleList()
    for blocks in towers(model):
        if not 1 <= count <= len(blocks):
            raise ValueError(
                f"method.last_layers.blocks must be in 1..{len(blocks)} for this backbone, "
                f"got {count}"
            )
        selected.extend(blocks[-count:])
    return selected.requires_grad_(True)
