"""Step-time overhead of DP-SGD on the gray-box adapters: DP step time / non-DP step time.

Times training steps of the same adapters around a ``fedgray-tiny`` backbone (random
weights: the same compute as the pretrained one) on one site's share of the built-in
``world/sketch`` data, in one process, interleaved step by step so that changes in
machine load hit every mode, after warm-up steps:

- ``non-DP``: the per-sample retrieval objective (the one DP-SGD trains) on fixed batches
  of ``--batch-size``, plain AdamW;
- ``DP``: the same objective through fedgray's Opacus DP-SGD (per-sample gradients,
  clipping, noise, the accountant's step hook) on Poisson batches of that expected size;
- ``non-DP InfoNCE`` (reference): the in-batch contrastive loss that runs without DP use.

It prints each mode's median step time and the ratios (of the medians, and the median of
the ratios within each round of interleaved steps)::

    python -m simulations.bench_dp_overhead [--method dga] [--steps 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import torch

from fedgray.adapters import build_model
from fedgray.backbone import SealedBackbone, load_sealed
from fedgray.data.registry import load_dataset
from fedgray.privacy import Ledger, NoisePlan, make_private, private_task
from fedgray.tasks import TASKS, Task, TaskData
from fedgray.tasks.data import prepare
from fedgray.train import batches

Batch = tuple[torch.Tensor, ...]


MODES: dict[str, tuple[bool, str]] = {  # name -> (DP-SGD, objective)
    "non-DP": (False, "per-sample"),
    "DP": (True, "per-sample"),
    "non-DP InfoNCE": (False, "infonce"),
}


class _Stepper:
    """Training steps of one mode: its own adapters, optimizer, batches and loss."""

    def __init__(
        self,
        backbone: SealedBackbone,
        data: TaskData,
        *,
        method: str,
        batch_size: int,
        private: bool,
        objective: str,
    ) -> None:
        torch.manual_seed(0)
        self.model = build_model(backbone, method)
        self.data, self.scale = data, backbone.interface.logit_scale
        self.task: Task = (
            private_task("retrieval", self.model)
            if objective == "per-sample"
            else TASKS["retrieval"]
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-3)
        self.stream: Iterator[Batch] = batches(data, batch_size=batch_size, seed=0)
        if private:
            dp = make_private(
                self.model,
                data,
                self.optimizer,
                plan=NoisePlan(noise_multiplier=1.0, sample_rate=batch_size / len(data)),
                max_grad_norm=1.0,
                ledger=Ledger("rdp"),
                seed=0,
            )
            self.optimizer, self.stream = dp.optimizer, dp.stream

    def timed_steps(self, count: int) -> list[float]:
        """Seconds of each of ``count`` more steps (batch drawn, loss, backward, step)."""
        times = []
        for _ in range(count):
            started = time.perf_counter()
            loss = self.task.loss(self.model, next(self.stream), self.data, self.scale)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            times.append(time.perf_counter() - started)
        return times


def measure(
    *, model: str, method: str, samples: int, batch_size: int, steps: int
) -> dict[str, list[float]]:
    """Step times of every mode after two warm-up steps each, interleaved step by step (one
    step of each mode per round, the order rotating), so that load changes hit all modes."""
    torch.manual_seed(0)
    backbone = load_sealed(model, None, level="gray+")
    dataset = load_dataset("world/sketch", split="train", size=samples, seed=0)
    data = prepare(dataset, backbone.tokenize, image_size=backbone.interface.image_size)
    steppers = {
        name: _Stepper(
            backbone, data, method=method, batch_size=batch_size, private=dp, objective=loss
        )
        for name, (dp, loss) in MODES.items()
    }
    for stepper in steppers.values():
        stepper.timed_steps(2)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    names = list(steppers)
    for step in range(steps):
        for name in names[step % len(names) :] + names[: step % len(names)]:
            times[name] += steppers[name].timed_steps(1)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of two modes' step times in the same round."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def main() -> None:
    """Run the measurement and print each mode's median step time and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--method", default="dga", help="gray-box method (dga, lga, output)")
    parser.add_argument("--samples", type=int, default=200, help="the site's training samples")
    parser.add_argument("--batch-size", type=int, default=64, help="(expected) batch size")
    parser.add_argument("--steps", type=int, default=120, help="timed steps per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = measure(
        model=args.model,
        method=args.method,
        samples=args.samples,
        batch_size=args.batch_size,
        steps=args.steps,
    )
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"{args.method} on {args.model}, {args.samples} samples, batch {args.batch_size} "
        f"(DP: Poisson, q = {args.batch_size / args.samples:.3f}), {args.threads} thread(s)"
    )
    for name, seconds in medians.items():
        print(f"{name:<15} {seconds * 1000:7.1f} ms per step (median of {len(times[name])})")
    same, infonce = times["non-DP"], times["non-DP InfoNCE"]
    print(
        f"ratio DP / non-DP (same objective): {medians['DP'] / medians['non-DP']:.2f} "
        f"(medians), {paired_ratio(times['DP'], same):.2f} (median of paired rounds)"
    )
    print(
        f"ratio DP / non-DP InfoNCE:          {medians['DP'] / medians['non-DP InfoNCE']:.2f} "
        f"(medians), {paired_ratio(times['DP'], infonce):.2f} (median of paired rounds)"
    )


if __name__ == "__main__":
    main()
