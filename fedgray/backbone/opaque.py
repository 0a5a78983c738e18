"""The backbone's part of a gray site's autograd graph, as one opaque node.

A plain forward through the model leaves torch's graph on the output: walking
``output.grad_fn.next_functions`` and reading each node's ``_saved_*`` tensors recovers
the weights that matmuls and convolutions save for their backward. :func:`run_sealed`
runs the model inside one custom ``autograd.Function`` instead. Its node saves the call's
inputs (the site's own tensors) and a bare token: the model call and the model's own
graph, built on detached copies of those inputs, are kept by that token in a registry of
this module (:data:`_MODELS`), so no attribute of any node or tensor the outer graph links
to leads to them, and its backward asks ``torch.autograd.grad`` for the gradients to the
inputs only. The weights are frozen, so nothing of the inner
graph outlives the backward call: its buffers are freed there, and a second backward
through a retained outer graph recomputes the forward. Outputs and gradients are bit for
bit those of a plain forward.

This closes the attribute paths from an output, nothing more: the model stays in this
process, one ``gc.get_objects()`` or closure walk away. In-process sealing guards against
mistakes (weights in a checkpoint, a log, a pickled update), not against the site's own
code; the runtime under another OS identity is the boundary (docs/security.md).

The inner graph costs what a plain forward's graph costs (the activations wait for the
backward) and no extra compute: the node does not recompute the forward in its backward,
which would cost one more backbone forward per step.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from fedgray.backbone.instrumentation import refuse_instrumentation

Run = Callable[..., torch.Tensor]


def _rerun(
    run: Run, names: Sequence[str], tensors: Sequence[torch.Tensor], needs: Sequence[bool]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``run`` on detached copies of ``tensors`` (with grad where ``needs``), under grad."""
    inputs = [t.detach().requires_grad_(need) for t, need in zip(tensors, needs, strict=True)]
    with torch.enable_grad():
        output = run(**dict(zip(names, inputs, strict=True)))
    return output, [t for t, need in zip(inputs, needs, strict=True) if need]


Pull = Callable[[torch.Tensor], tuple[torch.Tensor, ...] | None]


def _input_grads(
    output: torch.Tensor, wanted: list[torch.Tensor], grad_output: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The gradients of ``output``'s graph to ``wanted`` for ``grad_output`` (graph freed)."""
    with torch.enable_grad():
        return torch.autograd.grad(output, wanted, grad_output, allow_unused=True)


def _pull_once(output: torch.Tensor, wanted: list[torch.Tensor]) -> Pull:
    """:func:`_input_grads` of ``output``'s graph for one ``grad_output``, once.

    The graph lives only in this closure's cell and is dropped on the first call; later
    calls return ``None``.
    """
    graph = [(output, wanted)]

    def pull(grad_output: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        return _input_grads(*graph.pop(), grad_output) if graph else None

    return pull


def _autocast_now(kind: str) -> contextlib.AbstractContextManager[object]:
    """The autocast in force for device type ``kind``, to enter again later."""
    if not torch.is_autocast_enabled(kind):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.get_autocast_dtype(kind))


class _Token:
    """What the opaque node holds of its model: a key into :data:`_MODELS`, nothing more."""

    __slots__ = ("__weakref__",)


# The model call and the pending inner graph of each opaque node, by its token: kept off
# the node so that no attribute of the outputs' graph leads to the model (kept on the node,
# a walk from ``output.grad_fn`` would reach it in two hops). Gone with the node.
_MODELS: weakref.WeakKeyDictionary[_Token, tuple[Run, Pull]] = weakref.WeakKeyDictionary()


class _Opaque(torch.autograd.Function):
    """Forward and backward of the sealed model; saves only the call's inputs."""

    @staticmethod
    def forward(ctx: Any, run: Run, names: tuple[str, ...], *tensors: torch.Tensor) -> torch.Tensor:
        needs = ctx.needs_input_grad[2:]
        output, wanted = _rerun(run, names, tensors, needs)
        ctx.token, ctx.names = _Token(), names
        _MODELS[ctx.token] = (run, _pull_once(output, wanted))
        ctx.autocast = _autocast_now(tensors[0].device.type)
        ctx.save_for_backward(*tensors)
        return output.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _uncompiled(_backward)(ctx, grad_output)


def _backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    refuse_instrumentation()
    needs = ctx.needs_input_grad[2:]
    run, pull = _MODELS[ctx.token]
    pulled = pull(grad_output)  # the inner graph is freed here
    if pulled is None:  # a second backward through a retained outer graph
        with ctx.autocast:  # the forward's autocast, which backward passes do not inherit
            output, wanted = _rerun(run, ctx.names, ctx.saved_tensors, needs)
        pulled = _input_grads(output, wanted, grad_output)
    grads = iter(pulled)
    return (None, None, *(next(grads) if need else None for need in needs))


def _uncompiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with dynamo disabled for it and all it calls, once dynamo is loaded.

    ``torch.compile`` (and compiled autograd) load ``torch._dynamo``; a compiler backend
    tracing the sealed call or its backward would receive every weight as a graph input.
    Importing dynamo costs seconds, so it is not done before anyone else does.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:
        return fn
    if fn not in _DISABLED:
        _DISABLED[fn] = dynamo.disable(fn, recursive=True)
    return _DISABLED[fn]


_DISABLED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _check_plain(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse tensor subclasses: their ``__torch_function__`` would see every weight."""
    for name, tensor in tensors.items():
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{name}: the sealed backbone takes plain tensors, not {type(tensor)}")


def _run(
    run: Run, gradients: bool, opaque: bool, tensors: dict[str, torch.Tensor | None]
) -> torch.Tensor:
    given = {n: t for n, t in tensors.items() if t is not None}
    _check_plain(given)
    refuse_instrumentation()
    if not gradients:
        with torch.no_grad():
            return run(**given)
    if opaque and torch.is_grad_enabled() and any(t.requires_grad for t in given.values()):
        output: torch.Tensor = _Opaque.apply(run, tuple(given), *given.values())
        return output
    return run(**given)


def run_sealed(
    run: Run, *, gradients: bool, opaque: bool = True, **tensors: torch.Tensor | None
) -> torch.Tensor:
    """``run(**tensors)`` (``None`` left out) with no backbone tensor in the output's graph.

    With ``gradients`` False (``black``) the call runs without grad and returns a
    detached output. Otherwise, when grad is on and an input needs one, the call goes
    through :class:`_Opaque`; when none does, the frozen backbone builds no graph at all.
    ``opaque=False`` (the isolated runtime's own process) keeps the plain graph. Neither
    this call nor the backward is traced by dynamo (:func:`_uncompiled`).
    """
    output: torch.Tensor = _uncompiled(_run)(run, gradients, opaque, tensors)
    return output
