"""Forward passes of an open_clip ``CLIP`` with the gray-box inputs threaded through.

These functions run on the model owner's side of the seal: they touch the weights.
With every adapter argument left at ``None`` they call open_clip's own encoders, so
outputs equal the bare model's bit for bit. The adapter arguments are:

- ``shift`` [B, W]: added to every token embedding (text input adapter);
- ``extra_token`` [B, W] and ``extra_gate`` [B, 1]: one learned token written into the
  first padding slot after the end-of-text token; the pooled text feature becomes
  ``pool(eot) + gate * pool(extra)``. The causal mask keeps the caption's own tokens
  blind to it, so at ``gate == 0`` the output is exactly the bare model's;
- ``prompts`` [B, layers, n, W] and ``gates`` [B, layers, 1]: per-layer learnable tokens
  (LGA, gray+ only) that every token attends to through a separate, gated prefix
  attention (zero-initialised gating as in LLaMA-Adapter), so ``gates == 0`` is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def _run_blocks(
    transformer: nn.Module,
    x: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    prompts: torch.Tensor | None,
    gates: torch.Tensor | None,
) -> torch.Tensor:
    if prompts is None:
        return transformer(x, attn_mask=attn_mask)
    if not getattr(transformer, "batch_first", True):
        raise ValueError("entry points need a batch-first open_clip transformer")
    for i, block in enumerate(transformer.resblocks):
        h = block.ln_1(x)
        out = block.attention(q_x=h, attn_mask=attn_mask)
        extra = _prefix_attention(block.attn, h, block.ln_1(prompts[:, i]))
        x = x + block.ls_1(out + gates[:, i, None, :] * extra)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x


def encode_image(
    model: nn.Module,
    pixels: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    prompts: torch.Tensor | None = None,
    gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image features [B, D] of pixels [B, 3, H, W] in [0, 1]."""
    x = (pixels - mean) / std
    visual = model.visual
    if prompts is None:
        return visual(x)
    x = visual._embeds(x)
    x = _run_blocks(visual.transformer, x, attn_mask=None, prompts=prompts, gates=gates)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_text(
    model: nn.Module,
    tokens: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    extra_token: torch.Tensor | None = None,
    extra_gate: torch.Tensor | None = None,
    prompts: torch.Tensor | None = None,
    gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text features [B, D] of token ids [B, C] (end-of-text before the last slot)."""
    if shift is None and extra_token is None and prompts is None:
        return model.encode_text(tokens)
    x = model.token_embedding(tokens)
    if shift is not None:
        x = x + shift[:, None, :]
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    eot = tokens.argmax(dim=-1)
    if extra_token is not None:
        slot = F.one_hot(eot + 1, tokens.shape[1]).bool()[..., None]
        x = torch.where(slot, extra_token[:, None, :], x)
    x = x + model.positional_embedding
    x = _run_blocks(model.transformer, x, attn_mask=model.attn_mask, prompts=prompts, gates=gates)
    x = model.ln_final(x)
    pooled = x[rows, eot]
    if extra_token is not None:
        pooled = pooled + extra_gate * x[rows, eot + 1]
    return pooled @ model.text_projection
