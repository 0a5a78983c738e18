"""Compact adapter traffic (``federation.compression: int8``): what travels, both ways.

Up: a site sends its update as ``new - global`` quantised to int8, one float32 scale per
row (per tensor for vectors), and keeps what the rounding lost (error feedback): the
next round's update carries that residual, so no part of an update is lost, only
delayed. Down: the global adapters travel as float16; the server keeps them on the
float16 grid (:func:`snap`), so what a site receives is exactly the global model and the
deltas it sends back are against the same numbers the server adds them to.

Quantising a DP-SGD update is post-processing: the privacy accounting does not change.
SecAgg+ quantises the sum itself and is not combined with this codec.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord

from fedgray.fl.common.records import from_record, to_record

COMPRESSIONS = ("none", "int8")  # federation.compression
SCALES = "@scales"  # an encoded update's row scales, every tensor's in key order, in one array
LEVELS = 127  # symmetric int8 range


def snap(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` rounded to float16 and back: the grid the global adapters live on."""
    return {k: v.detach().to(torch.float16).to(v.dtype) for k, v in state.items()}


def encode_down(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """The global adapters as they travel down: float16 (exact for snapped ones)."""
    return to_record({k: v.to(torch.float16) for k, v in state.items()})


def decode_down(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The global adapters a site received, back in float32."""
    return {k: v.float() for k, v in from_record(record).items()}


def _rows(delta: torch.Tensor) -> torch.Tensor:
    return delta.reshape(delta.shape[0], -1) if delta.dim() >= 2 else delta.reshape(1, -1)


def encode_up(
    new: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    residual: Mapping[str, torch.Tensor],
) -> tuple[ArrayRecord, dict[str, torch.Tensor]]:
    """``new - reference + residual`` as int8 rows plus one array of row scales; and the new
    residual (what the rounding lost, to be sent with the next update)."""
    tensors: dict[str, torch.Tensor] = {}
    scales, left = [], {}
    for key, value in new.items():
        delta = value.detach().float() - reference[key].float()
        if key in residual:
            delta = delta + residual[key]
        rows = _rows(delta)
        scale = rows.abs().amax(dim=1, keepdim=True) / LEVELS
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        quantised = torch.round(rows / scale).clamp(-LEVELS, LEVELS)
        tensors[key] = quantised.to(torch.int8).reshape(delta.shape)
        scales.append(scale.squeeze(1))
        left[key] = delta - (quantised * scale).reshape(delta.shape)
    tensors[SCALES] = torch.cat(scales) if scales else torch.zeros(0)
    return to_record(tensors), left


def decode_up(record: ArrayRecord, reference: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """The site's new adapters, ``reference`` plus its dequantised update; ValueError when
    the record does not hold what :func:`encode_up` makes of ``reference``'s tensors."""
    tensors = from_record(record)
    if set(tensors) != {*reference, SCALES}:
        raise ValueError("int8 update: its tensors are not the global adapters' and their scales")
    counts = [_rows(base).shape[0] for base in reference.values()]
    if tensors[SCALES].shape != (sum(counts),):
        raise ValueError(f"int8 update: {SCALES} must hold {sum(counts)} row scales")
    state = {}
    for (key, base), scale in zip(reference.items(), tensors[SCALES].split(counts), strict=True):
        if tensors[key].shape != base.shape:
            raise ValueError(f"int8 update: {key} has shape {tuple(tensors[key].shape)}")
        delta = (_rows(tensors[key].float()) * scale.unsqueeze(1)).reshape(base.shape)
        state[key] = base.float() + delta
    return to_record(state)
