"""The gray step's throughput on the bench's device, against that device's own ceiling.

The step is DGA's (:class:`.steps.MethodStep`) on the device ``train.device: auto`` picks,
at the precision ``train.precision: auto`` picks there: bfloat16 autocast on CUDA, float32
on the CPU. The ceiling is the same device's matrix-multiply rate at that precision,
measured in the same run, interleaved with the steps. The step's floating-point operations
are counted by torch's ``FlopCounterMode`` on an unsealed (``white``) copy of the same
weights, because the sealed node refuses dispatch modes; the sealed step does the same
arithmetic (its node no longer recomputes the forward). The fraction says how much of what
the device can do the gray step uses; the rest is memory-bound work (normalisations,
softmax, elementwise ops) and Python between kernels.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from fedgray.devices import PRECISIONS, autocast, resolve_device

from .sections import Figure, Sizes, random_backbone, timed
from .steps import MethodStep, task_data

MATMUL = {"cpu": 1024, "cuda": 8192}  # square size: large enough to reach the ceiling
GPU_BATCH = 256  # a GPU needs a larger batch than a CPU to fill


def _synchronised(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` that returns once the device has finished its work (CUDA runs async)."""

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def matmul(device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], None], int]:
    """One square matmul on ``device`` in ``dtype``, and its floating-point operations."""
    size = MATMUL[device.type]
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return _synchronised(lambda: a @ b, device), 2 * size**3


def _step(name: str, level: str, batch: int, device: torch.device) -> MethodStep:
    backbone = random_backbone(name, level, device)
    return MethodStep(backbone, "dga", task_data(backbone, batch).to(device))


def throughput(sizes: Sizes) -> list[Figure]:
    """Samples per second of the gray step on the largest model of ``sizes``, and the
    fraction of the device's matrix-multiply rate it reaches."""
    name, batch = sizes.models[-1]
    device = resolve_device("auto")
    batch = GPU_BATCH if device.type == "cuda" else batch
    dtype = PRECISIONS["auto"](device)
    precision = str(dtype).removeprefix("torch.")
    gray = _step(name, "gray", batch, device)
    flops = counted(_step(name, "white", batch, device), device)
    with autocast(device, "auto"):  # the forward and backward of a site's step
        matmul_step, matmul_flops = matmul(device, dtype)
        times = timed({"step": _synchronised(gray, device), "matmul": matmul_step}, sizes)
    step_s, matmul_s = statistics.median(times["step"]), statistics.median(times["matmul"])
    ceiling = matmul_flops / matmul_s
    section = f"gray step throughput ({name}, batch {batch}, {device.type}, {precision})"
    return [
        Figure(section, "DGA step, samples per second", batch / step_s, "/s"),
        Figure(section, f"{precision} matmul ceiling, TFLOP/s", ceiling / 1e12, "TFLOP/s"),
        Figure(
            section,
            "DGA step / matmul ceiling",
            100 * flops / step_s / ceiling,
            "%",
            note=f"{flops / 1e9:.1f} GFLOP per step (FlopCounterMode)",
        ),
    ]


def counted(step: Callable[[], object], device: torch.device) -> int:
    """Floating-point operations of one ``step`` (forward, backward, optimiser)."""
    with autocast(device, "auto"), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
