"""The gray-box modules (DGA, arXiv 2502.00796) and per-layer tokens (LGA).

Every module starts as the identity, so an untrained adapter stack reproduces the bare
backbone exactly. Learned vectors are stored as ``nn.Embedding`` rows looked up once per
sample: Opacus then computes their per-sample gradients natively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from fedgray.config_schema import positive


@dataclass
class LgaConfig:
    """LGA (method ``lga``): ``prompt_tokens`` learnable tokens per transformer layer."""

    SECTION: ClassVar[str] = "lga"

    prompt_tokens: int = field(default=2, metadata=positive())


@dataclass
class LowRankOutputConfig:
    """Method ``output-lowrank``: the ``rank`` of its residual output adapters."""

    SECTION: ClassVar[str] = "output_lowrank"

    rank: int = field(default=8, metadata=positive())


def _rows(table: nn.Embedding, batch: int, count: int) -> torch.Tensor:
    index = torch.arange(count, device=table.weight.device).expand(batch, count)
    return table(index)


class ImageInputAdapter(nn.Module):
    """Stacked residual 3x3 convolutions in pixel space, ``x + conv(x)`` each, no activation.

    Each layer is the convolution whose kernel is identity + ``conv.weight``, so the stack
    is an affine map; zero-initialised weights make it the identity, bit for bit.
    """

    def __init__(self, *, channels: int = 3, depth: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        convs = [
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
            for _ in range(depth)
        ]
        self.convs = nn.ModuleList(convs)
        with torch.no_grad():
            for conv in convs:
                assert conv.bias is not None  # built with bias
                conv.weight.zero_()
                conv.bias.zero_()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Adapted pixels, same shape as ``pixels``."""
        for conv in self.convs:
            pixels = pixels + conv(pixels)
        return pixels


class TextInput(NamedTuple):
    """What the text input adapter hands to ``SealedBackbone.encode_text``."""

    shift: torch.Tensor
    extra_token: torch.Tensor
    extra_gate: torch.Tensor


class TextInputAdapter(nn.Module):
    """A shift added to every token embedding plus one gated extra token."""

    def __init__(self, width: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.vectors = nn.Embedding(2, width)
        self.gate = nn.Embedding(1, 1)
        with torch.no_grad():
            self.vectors.weight[0].zero_()
            self.vectors.weight[1].normal_(std=init_std)
            self.gate.weight.zero_()

    def forward(self, tokens: torch.Tensor) -> TextInput:
        """Per-sample copies of the learned vectors for a batch of token ids."""
        vectors = _rows(self.vectors, tokens.shape[0], 2)
        gate = _rows(self.gate, tokens.shape[0], 1)[:, 0]
        return TextInput(vectors[:, 0], vectors[:, 1], gate)


class OutputAdapter(nn.Linear):
    """A linear map on an embedding, initialised to the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim)
        with torch.no_grad():
            self.weight.copy_(torch.eye(dim))
            self.bias.zero_()


class ScaleShiftAdapter(nn.Module):
    """``x * scale + shift`` on an embedding, per dimension (2 x ``dim`` parameters),
    initialised to the identity: the smallest output adapter, for DP (fewer noised
    dimensions). The vectors are embedding rows, so Opacus computes per-sample gradients."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale, self.shift = nn.Embedding(1, dim), nn.Embedding(1, dim)
        with torch.no_grad():
            self.scale.weight.fill_(1.0)
            self.shift.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, D] scaled and shifted."""
        b = x.shape[0]
        return x * _rows(self.scale, b, 1)[:, 0] + _rows(self.shift, b, 1)[:, 0]


class LowRankOutputAdapter(nn.Module):
    """``x + up(down(x)) + bias`` on an embedding: a rank-``rank`` residual map
    (``(2 rank + 1) dim`` parameters), ``up`` zero-initialised so it starts as the identity."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim)
        with torch.no_grad():
            self.down.weight.normal_(std=dim**-0.5)
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, D] plus its low-rank correction."""
        return x + self.up(self.down(x))


class DeepPrompts(nn.Module):
    """LGA: ``count`` learnable tokens per layer with a zero-initialised gate per layer."""

    def __init__(self, *, layers: int, width: int, count: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.layers, self.count = layers, count
        self.tokens = nn.Embedding(layers * count, width)
        self.gates = nn.Embedding(layers, 1)
        with torch.no_grad():
            self.tokens.weight.normal_(std=init_std)
            self.gates.weight.zero_()

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts [B, layers, count, W] and gates [B, layers, 1] for a batch."""
        b = batch.shape[0]
        tokens = _rows(self.tokens, b, self.layers * self.count)
        return tokens.unflatten(1, (self.layers, self.count)), _rows(self.gates, b, self.layers)


class WhitenedOutputAdapter(nn.Module):
    """``x + delta(x @ whitening) @ basis.T``: a linear map on an embedding, preconditioned.

    With ``basis`` the identity, the same family of maps as :class:`OutputAdapter`, started
    at the identity (``delta`` zero), but trained through a fixed ``whitening`` of its input
    (see :mod:`fedgray.adapters.whitening`): a gradient step moves the map along every input
    direction alike instead of mostly along the few where the features carry their energy.
    A ``basis`` of K < D orthonormal columns confines the correction to their span (``delta``
    then has K outputs). Both are non-persistent buffers: computed from public data where
    the model is built, never in the state that is sent or saved; ``delta`` is an
    ``nn.Linear``, so Opacus computes its per-sample gradients with its own formula.
    """

    whitening: torch.Tensor
    basis: torch.Tensor

    def __init__(self, whitening: torch.Tensor, basis: torch.Tensor | None = None) -> None:
        super().__init__()
        dim = whitening.shape[0]
        basis = torch.eye(dim) if basis is None else basis
        self.register_buffer("whitening", whitening.clone(), persistent=False)
        self.register_buffer("basis", basis.clone(), persistent=False)
        self.delta = nn.Linear(dim, basis.shape[1])
        with torch.no_grad():
            self.delta.weight.zero_()
            self.delta.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, D] plus the preconditioned correction."""
        return x + self.delta(x @ self.whitening) @ self.basis.T
