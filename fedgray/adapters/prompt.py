"""CraFT's prompt at the black-box level: context tokens ``p = p0 + A z``.

CraFT (its code, ``mrflogs/CraFT``) learns ``n`` context-token embeddings placed before
each class name, initialised from the embeddings of "a photo of a": ``p0`` is those
embeddings, ``A`` a fixed random projection and ``z`` the low-dimensional point that
CMA-ES searches. The paper's user sends prompt embeddings and receives predictions.

Here the site writes the context words themselves in front of every class prompt, as
token ids ("a photo of a" + "a circle"), and sends ``A z`` as ``token_shifts``: the sealed
backbone adds it to those tokens' embeddings, so the text tower sees ``p0 + A z`` exactly
as in the paper while ``p0`` never leaves the backbone. The alternative, a backbone call
that returns the embeddings of a few tokens, would hand out rows of the embedding table
(one call per few rows, any token the site names): weights, which the sealed backbone
exists to hide. Adding a site-chosen vector to an embedding reveals nothing the existing
``shift`` input does not. ``z = 0`` is the bare backbone on "a photo of a <class prompt>",
bit for bit: CraFT's own zero-shot, its starting point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from fedgray.config_schema import check, positive, registered

CONTEXT = "a photo of a"  # the paper's initial context words


@dataclass
class CraftConfig:
    """CraFT (method ``craft``, black-box): CMA-ES over the prompt plus a refinement MLP.

    ``queries``: backbone calls the training may spend (the paper's 8,000), counted by the
    sealed backbone; ``popsize``/``sigma``: CMA-ES's population and initial step size;
    ``intrinsic_dim``: dimension of the searched point ``z``; ``projection``: how the fixed
    map ``A`` from ``z`` to the prompt is drawn (``normal``: N(0, 1/dim); ``uniform``: the
    authors' code, U(-1/sqrt(dim), 1/sqrt(dim)), 1/sqrt(3) of that spread); ``bound``:
    CMA-ES keeps each coordinate of ``z`` in ``[-bound, bound]`` (0: unbounded);
    ``consistency``: weight of the prediction-consistency term; ``consistency_until``: the
    share of a run's generations whose refiner loss has it (the fitness keeps it
    throughout, as the authors' code does); ``augment``: the refiner's epoch each
    generation sees freshly cropped and flipped training images (their features cost
    queries); ``hidden``: the refinement MLP's width; ``eval_every``: generations between
    test evaluations (free: no extra queries); ``context``: the words whose token
    embeddings start the prompt (the paper's "a photo of a"), written before every class
    prompt; ``validation``: the share of the training data held out to choose the
    generation returned (the start included; 0: the last generation, as the authors' code;
    ``fedgray adapt`` only: a federated site returns its last generation, and
    ``federation.select: best`` keeps the best round). The refinement MLP trains with
    ``train.lr`` and ``train.batch_size``.
    """

    SECTION: ClassVar[str] = "craft"

    queries: int = field(default=8000, metadata=positive())
    popsize: int = field(default=40, metadata=check(lambda v: v >= 2, "must be >= 2"))
    sigma: float = field(default=0.05, metadata=positive())
    intrinsic_dim: int = field(default=64, metadata=positive())
    projection: str = field(default="normal", metadata=registered("projection"))
    bound: float = field(default=5.0, metadata=check(lambda v: v >= 0, "must be >= 0"))
    consistency: float = field(default=0.01, metadata=check(lambda v: v >= 0, "must be >= 0"))
    consistency_until: float = field(
        default=0.25, metadata=check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
    )
    augment: bool = True
    hidden: int = field(default=256, metadata=positive())
    eval_every: int = field(default=10, metadata=positive())
    context: str = field(
        default="a photo of a", metadata=check(lambda v: bool(v.strip()), "must name words")
    )
    validation: float = field(
        default=0.2, metadata=check(lambda v: 0 <= v < 1, "must be in [0, 1)")
    )


class ContextInput(NamedTuple):
    """What the prompt hands to ``SealedBackbone.encode_text``: token ids with the context
    words written in, and the shifts of their embeddings (positions ``0..start+n``)."""

    tokens: torch.Tensor
    token_shifts: torch.Tensor


class Context(NamedTuple):
    """Where context words go in a tokenized prompt: ``ids`` after the first ``start``
    tokens (start-of-text), ``pad`` the id that fills a prompt's unused slots."""

    ids: torch.Tensor
    start: int
    pad: int


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    differs = (a != b).nonzero()
    return int(differs[0]) if len(differs) else a.numel()


def context_tokens(tokenize: Callable[[Sequence[str]], torch.Tensor], words: str) -> Context:
    """The token ids of ``words`` and where they go, read from the tokenizer alone: the
    tokens ``words`` share with the empty text are its start (start-of-text), the ones it
    adds before the padding are the context."""
    empty, text = tokenize(["", words])
    pad = int(empty[-1])
    start = _common_prefix(empty, text)
    count = int((text != pad).sum() - (empty != pad).sum())
    if count < 1:
        raise ValueError(f"method.craft.context: {words!r} has no tokens")
    return Context(text[start : start + count].clone(), start, pad)


PROJECTIONS: dict[str, Callable[[int, int], torch.Tensor]] = {
    # Entries N(0, 1/dim): a coordinate of A z has about the spread of one of z's.
    "normal": lambda size, dim: torch.randn(size, dim) / math.sqrt(dim),
    # The authors' code: A is an untrained nn.Linear(dim, size, bias=False), whose default
    # initialisation draws U(-1/sqrt(dim), 1/sqrt(dim)), a spread 1/sqrt(3) of "normal"'s.
    "uniform": lambda size, dim: (2 * torch.rand(size, dim) - 1) / math.sqrt(dim),
}
"""How the fixed projection ``A`` is drawn (``method.craft.projection``), from the global RNG."""


class PromptSpace(nn.Module):
    """The context tokens ``p0 + A z``: ``z`` is set, never trained; ``p0`` stays in the
    backbone (see the module doc)."""

    projection: torch.Tensor  # buffers, registered in __init__
    point: torch.Tensor
    context_ids: torch.Tensor

    def __init__(
        self, width: int, context: Context, *, dim: int, projection: str = "normal"
    ) -> None:
        super().__init__()
        self.width, self.start, self.pad = width, context.start, context.pad
        self.register_buffer("context_ids", context.ids.clone())
        size = context.ids.numel() * width
        self.register_buffer("projection", PROJECTIONS[projection](size, dim))
        self.register_buffer("point", torch.zeros(dim))

    @property
    def dim(self) -> int:
        """Dimension of the searched point ``z``."""
        return self.point.numel()

    @property
    def tokens(self) -> int:
        """Context tokens ``n``."""
        return self.context_ids.numel()

    def move_to(self, z: torch.Tensor) -> None:
        """Make ``z`` the prompt's current point."""
        self.point.copy_(z)

    def prompt(self) -> torch.Tensor:
        """``A z`` at the current point, one row per context token [n, width]: what the
        backbone adds to the context words' embeddings ``p0``."""
        return (self.projection @ self.point).view(self.tokens, self.width)

    def with_context(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class prompts' token ids [B, C] with the context ids written after the start;
        one line if a prompt then no longer fits (its last ``n + 1`` slots must be padding,
        one kept free for the end-of-text slot the backbone may need)."""
        n, start = self.tokens, self.start
        if bool((tokens[:, -(n + 1) :] != self.pad).any()):
            raise ValueError(
                f"a class prompt leaves no room for {n} context tokens in the backbone's "
                f"context length of {tokens.shape[1]}"
            )
        context = self.context_ids.to(tokens.device).expand(tokens.shape[0], n)
        return torch.cat([tokens[:, :start], context, tokens[:, start:-n]], dim=1)

    def forward(self, tokens: torch.Tensor) -> ContextInput:
        """The prompt as ``SealedBackbone.encode_text`` arguments for class prompts' ids."""
        batch, lead = tokens.shape[0], self.start + self.tokens
        shifts = self.point.new_zeros(lead, self.width)
        shifts[self.start :] = self.prompt()
        return ContextInput(self.with_context(tokens), shifts.expand(batch, lead, self.width))
