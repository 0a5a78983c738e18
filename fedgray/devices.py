"""Where training runs and at which precision: ``train.device`` and ``train.precision``.

``auto`` takes the GPU when torch sees one (CUDA), else the CPU. The precision ``auto``
is bfloat16 autocast on CUDA (tensor cores at several times float32's rate, float32's
exponent range, so no loss scaling) and float32 on the CPU, where bfloat16 matmuls are
slower than float32 on most machines. Autocast covers the forward pass; weights,
gradients and optimiser state stay float32. DP-SGD steps always run in float32: Opacus'
per-sample gradients, their norms and the clipping are then those the accountant assumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from fedgray.config_schema import ConfigError


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError("train.device: cuda, but torch sees no CUDA device on this machine")
    return torch.device("cuda")


DEVICES: dict[str, Callable[[], torch.device]] = {
    "auto": lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    "cpu": lambda: torch.device("cpu"),
    "cuda": _cuda,
}
PRECISIONS: dict[str, Callable[[torch.device], torch.dtype]] = {
    "auto": lambda device: torch.bfloat16 if device.type == "cuda" else torch.float32,
    "float32": lambda _: torch.float32,
    "bfloat16": lambda _: torch.bfloat16,
}


def resolve_device(name: str) -> torch.device:
    """The torch device ``train.device`` names here; one line when it is not present."""
    return DEVICES[name]()


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """Autocast to ``precision`` on ``device`` (nothing for float32)."""
    dtype = PRECISIONS[precision](device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
