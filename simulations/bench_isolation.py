"""Step-time overhead of the isolated backbone runtime against in-process sealing.

A thin driver of :mod:`fedgray.bench.isolated` (also part of ``fedgray bench``): seals a
randomly initialised model into a temporary artifact, opens it in-process and in the
isolated runtime, times DGA training steps with each, interleaved after warm-up, and
prints the median ratio of paired steps::

    python -m simulations.bench_isolation [--model fedgray-tiny] [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from fedgray.bench.isolated import RuntimeStart, isolation
from fedgray.bench.sections import Sizes


def main() -> None:
    """Run the comparison and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = Sizes(models=(), warmup=2, reps=args.steps, site_samples=0, site_batch=args.batch_size)
    with RuntimeStart(args.model) as start:
        for figure in isolation(start, sizes):
            print(f"{figure.name}: {figure.value:.2f}{figure.unit}")


if __name__ == "__main__":
    main()
