"""Text batches cut to their longest caption: exact, and most of the text tower's work.

Captions fill a few of a CLIP text tower's context slots (77 for ViT-B-32), but the tower
runs every slot. In a causal tower pooled at end-of-text, the end-of-text token and every
token before it attend only to earlier positions, so the padding after the longest
caption's end-of-text changes no pooled feature: the tower can run on the first
``L = max(end-of-text) + 2`` slots (the ``+ 2`` keeps the slot after end-of-text, where
the text input adapter's extra token sits), with the positional embedding and the causal
mask cut to ``L`` alike. Bidirectional towers (SigLIP) and towers pooled at a fixed slot
see the padding, and run untrimmed.

Every text pass of a trimmable tower is trimmed, with or without adapter inputs, so the
bare and adapted passes keep running the same shapes (and adapters at initialisation
still equal the bare backbone bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch

from fedgray.backbone.encoders import TextParts

_state = {"enabled": True}


def trimmable(parts: TextParts) -> bool:
    """Whether cutting the padding is exact for this tower (causal, pooled at end-of-text)."""
    return _state["enabled"] and parts.one_pass


def trim(parts: TextParts, tokens: torch.Tensor) -> tuple[TextParts, torch.Tensor]:
    """``parts`` and ``tokens`` [B, C] cut to ``L`` slots (see the module doc)."""
    length = min(tokens.shape[1], int(parts.pooled_index(tokens).max()) + 2)
    if length == tokens.shape[1] or parts.attn_mask is None:
        return parts, tokens
    cut = replace(
        parts,
        positional=parts.positional[:length],
        attn_mask=parts.attn_mask[:length, :length],
    )
    return cut, tokens[:, :length]


@contextmanager
def untrimmed() -> Iterator[None]:
    """Run text towers at full context length in this process: to measure what trimming
    saves, and to test that it changes nothing."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before
