"""Forward passes of open_clip towers with the gray-box inputs threaded through.

These functions run on the model owner's side of the seal: they touch the weights. Which
function runs which tower is decided by :mod:`fedgray.backbone.families`. With every adapter
argument left at ``None`` the families call open_clip's own encoders, so outputs equal the
bare model's bit for bit (causal text towers run trimmed to the longest caption instead,
:mod:`fedgray.backbone.trim`: equal within float rounding). The adapter arguments are:

- ``shift`` [B, W]: added to every token embedding (text input adapter);
- ``token_shifts`` [B, L, W], ``L`` at most the context length: added to the first ``L``
  token embeddings, position by position. CraFT's context tokens: the site writes "a photo
  of a" in its token ids and moves those tokens' embeddings by the prompt it searched, so
  the tower sees ``E(context) + A z`` without the site ever holding ``E`` (zeros: exact);
- ``extra_token`` [B, W] and ``extra_gate`` [B, 1]: one learned token that reads the caption;
  the pooled text feature becomes ``pool(caption) + gate * out(extra)``. In a causal tower
  pooled at end-of-text, the token sits in the free slot after end-of-text and the causal
  mask keeps the caption blind to it (one pass). In a bidirectional tower (SigLIP) or one
  pooled at a fixed slot, it takes the pooled slot's place in a second pass, so the first
  pass is the bare caption. Either way ``gate == 0`` is exactly the bare model;
- ``prompts`` [B, layers, n, W] and ``gates`` [B, layers, 1]: per-layer learnable tokens
  (LGA, gray+ only) that every token attends to through a separate, gated prefix
  attention (zero-initialised gating as in LLaMA-Adapter), so ``gates == 0`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextParts:
    """A text transformer's pieces, wherever the model class keeps them."""

    embedding: nn.Embedding
    positional: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    projection: nn.Module | torch.Tensor | None
    attn_mask: torch.Tensor | None
    pool: str  # open_clip's text_global_pool types: argmax, eos, last, first
    eos_id: int | None

    @property
    def one_pass(self) -> bool:
        """Whether the extra token fits after end-of-text, unseen by the caption."""
        return self.attn_mask is not None and self.pool in ("argmax", "eos")

    def pooled_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """The slot each row's feature is read from [B]."""
        batch, length = tokens.shape
        if self.pool == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool == "eos":
            return tokens.eq(-1 if self.eos_id is None else self.eos_id).int().argmax(dim=-1)
        fixed = {"first": 0, "last": length - 1}[self.pool]
        return torch.full((batch,), fixed, dtype=torch.long, device=tokens.device)


def enterable(transformer: Any) -> bool:
    """Whether a gray+ site's tokens can enter ``transformer``'s blocks: open_clip's default
    blocks (``ln_1``, ``nn.MultiheadAttention`` with a fused in-projection), batch first."""
    blocks: Any = getattr(transformer, "resblocks", None) or ()
    return (
        len(blocks) > 0
        and getattr(transformer, "batch_first", False)
        and all(
            isinstance(getattr(b, "attn", None), nn.MultiheadAttention)
            and b.attn.in_proj_weight is not None
            and b.attn.in_proj_bias is not None
            and hasattr(b, "ln_1")
            for b in blocks
        )
    )


def _prefix_attention(
    attn: nn.MultiheadAttention, h: torch.Tensor, p: torch.Tensor
) -> torch.Tensor:
    """Attention of queries ``h`` [B, L, W] over prompt tokens ``p`` [B, n, W], projected out."""
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    heads = attn.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    q = split(F.linear(h, w_q, b_q))
    k = split(F.linear(p, w_k, b_k))
    v = split(F.linear(p, w_v, b_v))
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    return F.linear(mixed, attn.out_proj.weight)


def run_blocks(
    transformer: Any,
    x: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    prompts: torch.Tensor | None,
    gates: torch.Tensor | None,
) -> torch.Tensor:
    """``transformer(x)``, with the per-layer prompts entered when given."""
    if prompts is None or gates is None:
        out: torch.Tensor = transformer(x, attn_mask=attn_mask)
        return out
    if not enterable(transformer):
        raise ValueError("entry points need open_clip's default batch-first transformer blocks")
    for i, block in enumerate(transformer.resblocks):
        h = block.ln_1(x)
        out = block.attention(q_x=h, attn_mask=attn_mask)
        extra = _prefix_attention(block.attn, h, block.ln_1(prompts[:, i]))
        x = x + block.ls_1(out + gates[:, i, None, :] * extra)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x


def encode_vit(
    visual: Any, x: torch.Tensor, prompts: torch.Tensor | None, gates: torch.Tensor | None
) -> torch.Tensor:
    """open_clip's VisionTransformer on normalised pixels, prompts entered when given."""
    if prompts is None:
        out: torch.Tensor = visual(x)
        return out
    x = visual._embeds(x)
    x = run_blocks(visual.transformer, x, attn_mask=None, prompts=prompts, gates=gates)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


def timm_enterable(visual: Any) -> bool:
    """Whether ``visual`` (open_clip's TimmModel) wraps a timm VisionTransformer of standard
    blocks: pre-norm ``Block`` with a fused-qkv ``Attention``, no per-head gate or norm."""
    from timm.models import vision_transformer as vt

    blocks: Any = getattr(visual.trunk, "blocks", None) or ()
    return (
        isinstance(visual.trunk, vt.VisionTransformer)
        and len(blocks) > 0
        and all(
            type(b) is vt.Block
            and type(b.attn) is vt.Attention
            and isinstance(b.attn.norm, nn.Identity)
            and getattr(b.attn, "gate", None) is None
            for b in blocks
        )
    )


def _timm_prefix_attention(attn: Any, h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """timm's Attention of queries ``h`` over prompt tokens ``p``, projected out (no bias)."""
    weights = attn.qkv.weight.chunk(3)
    biases = attn.qkv.bias.chunk(3) if attn.qkv.bias is not None else (None, None, None)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)

    q = attn.q_norm(split(F.linear(h, weights[0], biases[0])))
    k = attn.k_norm(split(F.linear(p, weights[1], biases[1])))
    v = split(F.linear(p, weights[2], biases[2]))
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    return F.linear(mixed, attn.proj.weight)


def encode_timm(
    visual: Any, x: torch.Tensor, prompts: torch.Tensor | None, gates: torch.Tensor | None
) -> torch.Tensor:
    """open_clip's TimmModel; a timm ViT's blocks entered like open_clip's when prompted."""
    if prompts is None or gates is None:
        return encode_plain(visual, x, prompts, gates)
    if not timm_enterable(visual):
        raise ValueError(f"the timm trunk {type(visual.trunk).__name__} has no entry points")
    trunk = visual.trunk
    x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(x))))
    for i, block in enumerate(trunk.blocks):
        h = block.norm1(x)
        extra = _timm_prefix_attention(block.attn, h, block.norm1(prompts[:, i]))
        x = x + block.drop_path1(block.ls1(block.attn(h) + gates[:, i, None, :] * extra))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    out: torch.Tensor = visual.head(trunk.forward_head(trunk.norm(x)))
    return out


def encode_plain(
    visual: Any, x: torch.Tensor, prompts: torch.Tensor | None, gates: torch.Tensor | None
) -> torch.Tensor:
    """A tower without entry points (ModifiedResNet, timm): its own forward."""
    if prompts is not None:
        raise ValueError(f"the image tower {type(visual).__name__} has no entry points")
    out: torch.Tensor = visual(x)
    return out


def _project(parts: TextParts, pooled: torch.Tensor) -> torch.Tensor:
    if parts.projection is None:
        return pooled
    if isinstance(parts.projection, nn.Module):
        out: torch.Tensor = parts.projection(pooled)
        return out
    return pooled @ parts.projection


def _run_text(
    parts: TextParts, x: torch.Tensor, prompts: torch.Tensor | None, gates: torch.Tensor | None
) -> torch.Tensor:
    """Token embeddings [B, C, W] through the tower, normalised [B, C, W]."""
    x = run_blocks(
        parts.transformer,
        x + parts.positional,
        attn_mask=parts.attn_mask,
        prompts=prompts,
        gates=gates,
    )
    out: torch.Tensor = parts.ln_final(x)
    return out


def encode_text(
    parts: TextParts,
    tokens: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    token_shifts: torch.Tensor | None = None,
    extra_token: torch.Tensor | None = None,
    extra_gate: torch.Tensor | None = None,
    prompts: torch.Tensor | None = None,
    gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text features [B, D] of token ids [B, C] with the adapter inputs (see module doc)."""
    x = parts.embedding(tokens)
    if shift is not None:
        x = x + shift[:, None, :]
    if token_shifts is not None:  # a trimmed batch drops shifts of padding only
        lead = token_shifts[:, : x.shape[1]]
        x = torch.cat([x[:, : lead.shape[1]] + lead, x[:, lead.shape[1] :]], dim=1)
    index = parts.pooled_index(tokens)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    if extra_token is None or extra_gate is None:
        return _project(parts, _run_text(parts, x, prompts, gates)[rows, index])
    if parts.one_pass:
        slot = F.one_hot(index + 1, tokens.shape[1]).bool()[..., None]
        out = _run_text(parts, torch.where(slot, extra_token[:, None, :], x), prompts, gates)
        pooled, extra = out[rows, index], out[rows, index + 1]
    else:
        slot = F.one_hot(index, tokens.shape[1]).bool()[..., None]
        pooled = _run_text(parts, x, prompts, gates)[rows, index]
        read = torch.where(slot, extra_token[:, None, :], x)
        extra = _run_text(parts, read, prompts, gates)[rows, index]
    return _project(parts, pooled + extra_gate * extra)
