"""Interleaved timing and per-step peak memory: the measuring tools every section shares.

Steps of the compared modes alternate one by one, the order rotating each round, so that a
change in machine load hits every mode alike; a ratio is the median over rounds of the
ratio within a round, which cancels the load common to one round. Peak memory is counted
from torch's own allocation events (the profiler's memory records), not from the
process's resident size, which the allocator's free lists and other work in the process
would blur.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping

import torch
from torch.profiler import ProfilerActivity, profile

Step = Callable[[], object]


def interleaved(steps: Mapping[str, Step], *, warmup: int, reps: int) -> dict[str, list[float]]:
    """Seconds of ``reps`` calls of each step after ``warmup`` untimed ones, interleaved."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - started)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two modes' times in the same round."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's start/stop lines (written by C++ straight to fd 2)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_step_bytes(step: Step) -> int:
    """The most bytes torch holds at once during ``step()`` beyond what it held before
    (activations, gradients, temporaries): the running sum of its allocation events."""
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    events = [e for e in results.events() if e.name() == "[memory]"] if results else []
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def tensor_bytes(tensors: object) -> int:
    """Bytes of every tensor in a (nested) optimizer state or parameter list."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, Mapping):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, list | tuple):
        return sum(tensor_bytes(v) for v in tensors)
    return 0
