"""CraFT's prompt generator at the black-box level: ``p = p0 + A z``.

At ``black`` a site may only send inputs and read detached outputs. The text input the
sealed backbone accepts besides token ids is the gray-box text entry: a ``shift`` added
to every token embedding and one ``extra_token`` written after end-of-text, whose pooled
output is added through ``extra_gate``. CraFT learns a text prompt (its code: context
token embeddings in place of "a photo of a"); here the prompt is that entry,
``p = (shift, extra_token, gate)`` of size ``2 * token_width + 1``. ``z`` is a
low-dimensional point that CMA-ES searches, ``A`` a fixed random projection, and ``p0``
puts zeros on the shift and the gate, so ``z = 0`` is the bare backbone exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedgray.adapters.modules import TextInput


class PromptSpace(nn.Module):
    """The prompt ``p0 + A z`` as text-input arguments; ``z`` is set, never trained."""

    projection: torch.Tensor  # buffers, registered in __init__
    base: torch.Tensor
    point: torch.Tensor

    def __init__(self, width: int, *, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.width = width
        size = 2 * width + 1
        # Entries N(0, 1/dim): a coordinate of A z then has about the spread of one of z's.
        self.register_buffer("projection", torch.randn(size, dim) / math.sqrt(dim))
        base = torch.zeros(size)
        base[width : 2 * width].normal_(std=init_std)
        self.register_buffer("base", base)
        self.register_buffer("point", torch.zeros(dim))

    @property
    def dim(self) -> int:
        """Dimension of the searched point ``z``."""
        return self.point.numel()

    def move_to(self, z: torch.Tensor) -> None:
        """Make ``z`` the prompt's current point."""
        self.point.copy_(z)

    def prompt(self) -> torch.Tensor:
        """``p0 + A z`` at the current point, [2 * width + 1]."""
        return self.base + self.projection @ self.point

    def forward(self, tokens: torch.Tensor) -> TextInput:
        """The prompt as ``SealedBackbone.encode_text`` arguments for a batch of token ids."""
        p, w, batch = self.prompt(), self.width, tokens.shape[0]
        return TextInput(
            p[:w].expand(batch, w), p[w : 2 * w].expand(batch, w), p[2 * w :].expand(batch, 1)
        )
