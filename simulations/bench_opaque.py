"""Step-time cost of the opaque autograd node that keeps weights out of gray outputs' graphs.

A gray backbone runs the model behind one ``autograd.Function`` whose backward pulls the
model's graph from a closure (``fedgray/backbone/opaque.py``); a white backbone of the same
weights runs the plain graph. Times DGA training steps with each
(:class:`fedgray.bench.steps.MethodStep`), interleaved after warm-up, and prints the median
ratio of paired steps::

    python -m simulations.bench_opaque [--steps 30] [--threads 1] [--model fedgray-tiny]
"""

from __future__ import annotations

import argparse

import torch

from fedgray.backbone import load_sealed
from fedgray.bench.steps import MethodStep, task_data
from fedgray.bench.timing import interleaved, paired_ratio


def main() -> None:
    """Run the comparison and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {}
    for mode, level in (("plain graph", "white"), ("opaque", "gray")):
        torch.manual_seed(0)
        backbone = load_sealed(args.model, None, level=level)
        steps[mode] = MethodStep(backbone, "dga", task_data(backbone, args.batch_size))
    times = interleaved(dict(steps), warmup=2, reps=args.steps)
    print(f"ratio opaque / plain graph: {paired_ratio(times['opaque'], times['plain graph']):.2f}")


if __name__ == "__main__":
    main()
