"""Per-sample gradients for fedgray's subclasses of Opacus' layers.

Opacus matches layers by exact type, so a subclass that keeps its layer's forward
(``OutputAdapter`` is an ``nn.Linear``) would go through functorch's ``vmap`` over the
layer: the same gradients, about ten times slower. Here such a subclass gets its layer's
formula.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from opacus import GradSampleModule

LAYER_PARAMETERS = frozenset({"weight", "bias"})  # what Opacus' layer formulas differentiate


class AdapterGradSampleModule(GradSampleModule):
    """Opacus' hooks-mode ``GradSampleModule`` that also gives a subclass of a layer with a
    grad sampler that layer's sampler, when the subclass keeps the layer's ``forward``, has
    no submodules and no parameters but the layer's own (``weight``, ``bias``): it computes
    the layer's function, so the layer's per-sample gradient formula is exact for it. Any
    other module keeps Opacus' choice (its own sampler, else functorch)."""

    def _get_module_type(self, module: torch.nn.Module) -> type:
        return layer_type(module, self.GRAD_SAMPLERS)


def layer_type(module: torch.nn.Module, samplers: Mapping[type, object]) -> type:
    """The type whose grad sampler computes ``module``'s per-sample gradients (see
    :class:`AdapterGradSampleModule`): its own, or the sampled layer it only re-initialises."""
    kind = type(module)
    if kind in samplers or next(module.children(), None) is not None:
        return kind
    if not set(module._parameters) <= LAYER_PARAMETERS:
        return kind
    for base in kind.__mro__[1:]:
        if base in samplers:  # the nearest sampled layer: its formula, if its forward runs
            keeps = getattr(kind, "forward", None) is getattr(base, "forward", None)
            return base if keeps else kind
    return kind
