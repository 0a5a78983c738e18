"""Step-time cost of the opaque autograd node that keeps weights out of gray outputs' graphs.

A gray backbone runs the model behind one ``autograd.Function`` whose backward recomputes
the forward (``fedgray/backbone/opaque.py``); a white backbone of the same weights runs the
plain graph (what gray did before). Times DGA training steps (batch 64, retrieval loss,
``world/sketch``) with each, in alternating blocks so that load changes hit both, and
prints the median step times and their ratio::

    python -m simulations.bench_opaque [--steps 60] [--threads N] [--model fedgray-tiny]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from fedgray.backbone import load_sealed
from simulations.bench_isolation import _Trainer


def main() -> None:
    """Run the comparison and print one line per mode and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per mode")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    trainers = {}
    for mode, level in (("plain graph", "white"), ("opaque", "gray")):
        torch.manual_seed(0)
        backbone = load_sealed(args.model, None, level=level)
        trainers[mode] = _Trainer(backbone, batch_size=args.batch_size)
    times: dict[str, list[float]] = {mode: [] for mode in trainers}
    for trainer in trainers.values():
        trainer.timed_steps(2)  # warm-up
    for _ in range(args.blocks):  # interleaved, so that load changes hit both
        for mode, trainer in trainers.items():
            times[mode] += trainer.timed_steps(args.steps // args.blocks)
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, seconds in medians.items():
        print(f"{mode:<11} {seconds * 1000:7.1f} ms per step (median of {len(times[mode])})")
    print(f"ratio opaque / plain graph: {medians['opaque'] / medians['plain graph']:.2f}")


if __name__ == "__main__":
    main()
