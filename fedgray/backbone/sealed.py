"""The sealed backbone: a frozen CLIP that sites may run but not read.

A :class:`SealedBackbone` publishes only a :class:`BackboneInterface` (input and output
shapes, and entry points at ``gray+``) and two encoders. The model itself is held in
the closures of those encoders, not in any attribute; ``parameters()``,
``state_dict()``, pickling, ``copy``/``deepcopy`` and ``torch.save`` all raise
:class:`SealedError`. At ``black`` the encoders run without gradients, return detached
outputs. Below ``white`` the encoders count their calls, the samples they forward and
the samples whose input gradients they may return against a :class:`Budget`
(:mod:`fedgray.backbone.budget`): the bound on what a site can learn of the model by
querying it (extraction; see docs/security.md).

At ``gray`` and ``gray+`` the model runs behind one opaque autograd node
(:mod:`fedgray.backbone.opaque`), so the outputs' graph holds no backbone tensor, and the
encoders refuse to run while torch is instrumented (:mod:`fedgray.backbone.instrumentation`).

This is sealing inside one Python process: it keeps weights out of every public path,
out of anything serialised and out of the outputs' graph, but a hostile process that
holds the object can still read its memory (``gc``, closures, patched torch functions,
a debugger). The isolated runtime is the mode that holds against the site's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import torch
from torch import nn

from fedgray.backbone import families
from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.budget import Budget, Meter, Spend, call, spending_site
from fedgray.backbone.opaque import run_sealed

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EntryPoint:
    """A tower whose layers accept learnable tokens (published at ``gray+`` only)."""

    tower: str
    layers: int
    width: int


@dataclass(frozen=True)
class BackboneInterface:
    """What a site is told about the backbone: shapes, never weights."""

    name: str
    level: AccessLevel
    image_size: int
    embed_dim: int
    context_length: int
    token_width: int
    logit_scale: float
    parameter_count: int
    vocab_size: int
    entry_points: tuple[EntryPoint, ...] = ()
    image_family: str = "vit"  # see fedgray.backbone.families
    text_family: str = "clip-text"


def entry_points(model: nn.Module) -> tuple[EntryPoint, ...]:
    """The towers whose transformer blocks a ``gray+`` site may enter (families decide)."""
    blocks = families.describe(model).blocks
    return tuple(EntryPoint(t, *blocks[t]) for t in families.TOWERS if t in blocks)


def _describe(model: nn.Module, name: str, level: AccessLevel) -> BackboneInterface:
    shapes = families.describe(model)
    return BackboneInterface(
        name=name,
        level=level,
        image_size=shapes.image_size,
        embed_dim=shapes.embed_dim,
        context_length=shapes.context_length,
        token_width=shapes.token_width,
        logit_scale=float(cast(torch.Tensor, model.logit_scale).detach().exp()),
        parameter_count=sum(p.numel() for p in model.parameters()),
        vocab_size=shapes.vocab_size,
        entry_points=entry_points(model) if level.entry_points else (),
        image_family=shapes.image_family,
        text_family=shapes.text_family,
    )


class QueryCounted:
    """The access level, budget and spend every backbone API publishes."""

    __slots__ = ()
    interface: BackboneInterface
    _meter: Meter
    _site_meters: dict[Hashable, Meter]

    def meter(self) -> Meter:
        """The meter this thread's calls charge: the backbone's own, or, within
        :func:`~fedgray.backbone.budget.spent_by`, that site's (same budget, own spend)."""
        site = spending_site()
        if site is None:
            return self._meter
        return self._site_meters.setdefault(site, Meter(self._meter.budget))

    @property
    def level(self) -> AccessLevel:
        """The access level this backbone enforces."""
        return self.interface.level

    @property
    def spent(self) -> Spend:
        """Encoder calls, samples forwarded and samples with input gradients so far."""
        return self.meter().spent

    @property
    def budget(self) -> Budget:
        """What this backbone lets its site spend."""
        return self.meter().budget

    @property
    def queries_used(self) -> int:
        """Encoder calls made so far (counted and budgeted at every level)."""
        return self.spent.queries

    @property
    def query_budget(self) -> int | None:
        """Encoder calls allowed (None: unlimited)."""
        return self.budget.queries


def charge(meter: Meter, level: AccessLevel, main: torch.Tensor, *inputs: object) -> Spend:
    """Count one encoder call of ``main``'s batch on ``meter`` (with input gradients when
    the level returns them and an input needs one now): what it spent."""
    grads = (
        level.gradients
        and torch.is_grad_enabled()
        and any(isinstance(t, torch.Tensor) and t.requires_grad for t in (main, *inputs))
    )
    asked = call(int(main.shape[0]) if main.dim() else 1, gradients=grads)
    meter.charge(asked)
    return asked


class SealedBackbone(QueryCounted):
    """A frozen CLIP behind an access level; see the module docstring.

    ``opaque=False`` leaves the backbone's graph plain (no opaque node): for
    the isolated runtime, whose outputs leave the process detached. It hides nothing from
    whoever constructs the backbone, who holds the model already. ``device``: where the
    model runs; its encoders take and return tensors there. ``query_budget``,
    ``sample_budget`` and ``gradient_budget``: the :class:`Budget` (None: unlimited; no
    sample or gradient budget at ``white``).
    """

    __slots__ = (
        "interface",
        "device",
        "_image",
        "_text",
        "_tokenize",
        "_module",
        "_meter",
        "_site_meters",
    )
    device: torch.device
    _image: Callable[..., torch.Tensor]  # the slots set in __init__
    _text: Callable[..., torch.Tensor]
    _tokenize: Callable[[Sequence[str]], torch.Tensor]
    _module: Callable[[], nn.Module] | None

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., torch.Tensor],
        *,
        name: str,
        level: AccessLevel | str = AccessLevel.GRAY,
        query_budget: int | None = None,
        sample_budget: int | None = None,
        gradient_budget: int | None = None,
        opaque: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        level, device = AccessLevel(level), torch.device(device)
        model.eval().requires_grad_(False).to(device)
        preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = torch.tensor(preprocess.get("mean", OPENAI_MEAN), device=device).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.get("std", OPENAI_STD), device=device).view(1, 3, 1, 1)
        interface = _describe(model, name, level)
        context, free = interface.context_length, int(families.describe(model).reserves_slot)

        def run_image(pixels: torch.Tensor, **inputs: Any) -> torch.Tensor:
            return families.encode_image(model, pixels, mean=mean, std=std, **inputs)

        def run_text(tokens: torch.Tensor, **inputs: Any) -> torch.Tensor:
            return families.encode_text(model, tokens, **inputs)

        if level is AccessLevel.WHITE:  # the model is handed out anyway: a plain graph
            image, text = run_image, run_text
        else:

            def image(pixels: torch.Tensor, **inputs: Any) -> torch.Tensor:
                grad = level.gradients
                return run_sealed(run_image, gradients=grad, opaque=opaque, pixels=pixels, **inputs)

            def text(tokens: torch.Tensor, **inputs: Any) -> torch.Tensor:
                grad = level.gradients
                return run_sealed(run_text, gradients=grad, opaque=opaque, tokens=tokens, **inputs)

        def tokenize(texts: Sequence[str]) -> torch.Tensor:
            # Causal towers keep one slot free after end-of-text for the extra token.
            ids = tokenizer(list(texts), context_length=context - free)
            return torch.nn.functional.pad(ids, (0, free))

        setattr_ = object.__setattr__
        setattr_(self, "interface", interface)
        setattr_(self, "device", device)
        setattr_(self, "_image", image)
        setattr_(self, "_text", text)
        setattr_(self, "_tokenize", tokenize)
        setattr_(self, "_module", (lambda: model) if level is AccessLevel.WHITE else None)
        white = level is AccessLevel.WHITE  # the model is handed out: nothing to bound
        budget = Budget(
            query_budget, None if white else sample_budget, None if white else gradient_budget
        )
        setattr_(self, "_meter", Meter(budget))
        setattr_(self, "_site_meters", {})

    @property
    def module(self) -> nn.Module:
        """The plain open_clip model: ``white`` level only, for baselines."""
        if self._module is None:
            self._refuse("module")
        return self._module()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length] for ``texts``, in the backbone's vocabulary."""
        return self._tokenize(texts).to(self.device)

    def encode_image(
        self,
        pixels: torch.Tensor,
        *,
        prompts: torch.Tensor | None = None,
        gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image features [B, embed_dim] of pixels [B, 3, S, S] in [0, 1].

        ``prompts``/``gates`` are per-layer tokens for the image tower's entry points.
        """
        self._check_prompts("image", prompts)
        charge(self.meter(), self.level, pixels, prompts, gates)
        return self._image(pixels, prompts=prompts, gates=gates)

    def encode_text(
        self,
        tokens: torch.Tensor,
        *,
        shift: torch.Tensor | None = None,
        token_shifts: torch.Tensor | None = None,
        extra_token: torch.Tensor | None = None,
        extra_gate: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
        gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text features [B, embed_dim] of token ids from :meth:`tokenize`.

        ``shift`` [B, token_width] is added to every token embedding; ``token_shifts``
        [B, L, token_width] to the first ``L`` token embeddings, one row per position (CraFT's
        context tokens: the site moves them, it never reads them); ``extra_token``
        [B, token_width] with ``extra_gate`` [B, 1] is the appended learned token.
        """
        self._check_prompts("text", prompts)
        if (extra_token is None) != (extra_gate is None):
            raise ValueError("extra_token and extra_gate go together")
        if token_shifts is not None and token_shifts.shape[1] > self.interface.context_length:
            raise ValueError(
                f"token_shifts: {token_shifts.shape[1]} positions, more than the context "
                f"length {self.interface.context_length}"
            )
        floats = (shift, token_shifts, extra_token, extra_gate, prompts, gates)
        charge(self.meter(), self.level, tokens, *floats)
        return self._text(
            tokens,
            shift=shift,
            token_shifts=token_shifts,
            extra_token=extra_token,
            extra_gate=extra_gate,
            prompts=prompts,
            gates=gates,
        )

    def _check_prompts(self, tower: str, prompts: torch.Tensor | None) -> None:
        if prompts is None:
            return
        if not self.level.entry_points:
            self._refuse("entry points (per-layer prompts)")
        if tower not in {p.tower for p in self.interface.entry_points}:
            family = getattr(self.interface, f"{tower}_family")
            raise SealedError(
                f"the {tower} tower of '{self.interface.name}' ({family}) has no transformer "
                "blocks to enter: no gray+ entry point there"
            )

    def _refuse(self, what: str) -> NoReturn:
        raise SealedError(
            f"the backbone '{self.interface.name}' is sealed at level '{self.level.value}': "
            f"{what} not accessible"
        )

    def parameters(self, *_: Any, **__: Any) -> NoReturn:
        """Refused: a sealed backbone has no visible parameters."""
        self._refuse("parameters()")

    def named_parameters(self, *_: Any, **__: Any) -> NoReturn:
        """Refused: a sealed backbone has no visible parameters."""
        self._refuse("named_parameters()")

    def state_dict(self, *_: Any, **__: Any) -> NoReturn:
        """Refused: a sealed backbone's weights cannot be exported."""
        self._refuse("state_dict()")

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        self._refuse(f"setting '{name}' is")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self._refuse("pickling (and torch.save) is")

    def __copy__(self) -> NoReturn:
        self._refuse("copying is")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        self._refuse("copying is")

    def __repr__(self) -> str:
        i = self.interface
        return f"SealedBackbone({i.name!r}, level={i.level.value!r}, embed_dim={i.embed_dim})"
