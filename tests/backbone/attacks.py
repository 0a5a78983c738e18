"""Attacks on a sealed backbone, written as a hostile site would write them, and the
ground truth (the weights, reached through private closures) to judge what they got."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def ground_truth(backbone: object) -> nn.Module:
    """The open_clip model inside a ``SealedBackbone``'s closures (test-only: private)."""
    seen: set[int] = set()
    stack: list[object] = [backbone._image]  # type: ignore[attr-defined]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            return obj
        for cell in getattr(obj, "__closure__", None) or ():
            stack.append(cell.cell_contents)
    raise AssertionError("no model in the closures")


def graph_tensors(output: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor an attacker reaches from ``output.grad_fn``: each node's ``_saved_*``
    attributes, ``saved_tensors``, AccumulateGrad's ``variable``, and any other attribute
    holding a tensor (or a tuple/list of tensors), and the graphs of those tensors too."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if name.startswith("__"):
                continue
            try:
                with warnings.catch_warnings():  # saved_variables: deprecated alias
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = getattr(node, name)
            except Exception:  # noqa: BLE001, S112 - some saved slots raise once freed
                continue
            values = value if isinstance(value, (tuple, list)) else (value,)
            tensors = [v for v in values if isinstance(v, torch.Tensor)]
            found += tensors
            stack += [t.grad_fn for t in tensors]
        stack += [next_node for next_node, _ in node.next_functions]
    return found


def leaked_weights(tensors: list[torch.Tensor], model: nn.Module) -> set[str]:
    """Names of ``model``'s parameters and buffers that any of ``tensors`` equals (in any
    element order: transposes and views count) or shares memory with."""
    leaked = set()
    for name, weight in [*model.named_parameters(), *model.named_buffers()]:
        if weight.numel() < 2:
            continue
        pointer = weight.untyped_storage().data_ptr()
        ordered = weight.detach().flatten().sort().values
        for t in tensors:
            if t.untyped_storage().data_ptr() == pointer or (
                t.numel() == weight.numel()
                and t.dtype == weight.dtype
                and torch.equal(t.detach().flatten().sort().values, ordered)
            ):
                leaked.add(name)
                break
    return leaked
