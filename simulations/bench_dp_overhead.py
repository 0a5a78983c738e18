"""Step-time overhead of DP-SGD on the gray-box adapters: DP step time / non-DP step time.

A thin driver of :class:`fedgray.bench.steps.ObjectiveStep` (the same comparison runs in
``fedgray bench``): the same adapters around a randomly initialised model on one site's
share of ``world/sketch``, the per-sample retrieval objective DP-SGD trains, non-private on
shuffled batches and through fedgray's Opacus DP-SGD on Poisson batches of that expected
size, interleaved step by step after warm-up; prints the median ratio of paired steps::

    python -m simulations.bench_dp_overhead [--method dga] [--steps 60] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from fedgray.backbone import load_sealed
from fedgray.bench.steps import ObjectiveStep, task_data
from fedgray.bench.timing import interleaved, paired_ratio


def main() -> None:
    """Run the measurement and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--method", default="dga", help="gray-box method (dga, lga, output)")
    parser.add_argument("--samples", type=int, default=200, help="the site's training samples")
    parser.add_argument("--batch-size", type=int, default=64, help="(expected) batch size")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = load_sealed(args.model, None, level="gray+")
    data = task_data(backbone, args.samples)
    steps = {
        mode: ObjectiveStep(
            backbone, data, method=args.method, batch_size=args.batch_size, private=mode == "DP"
        )
        for mode in ("non-DP", "DP")
    }
    times = interleaved(dict(steps), warmup=2, reps=args.steps)
    print(
        f"{args.method} on {args.model}, {args.samples} samples, batch {args.batch_size}, "
        f"{args.threads} thread(s): DP / non-DP {paired_ratio(times['DP'], times['non-DP']):.2f}"
    )


if __name__ == "__main__":
    main()
