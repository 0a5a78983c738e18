"""Training under load: the owner's pretraining step alone and beside CPU-bound processes.

OpenMP threads that finish their share of a parallel region spin before they sleep
(libgomp: ``GOMP_SPINCOUNT`` iterations, 300,000 by default). Alone that saves wake-ups;
on a busy machine a spinning thread burns the time slice its partner needs, and every
barrier waits a scheduler quantum. fedgray sets ``GOMP_SPINCOUNT=10000`` unless the user
sets it (:mod:`fedgray`). This driver times the step in fresh processes, each spin count
alone and beside ``--hogs`` busy loops, interleaved, and prints median seconds per step and
each setting's slowdown under load::

    python -m simulations.bench_load [--threads 2] [--hogs 2] [--reps 2] [--steps 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SPIN_COUNTS = ("300000", "10000", "0")  # libgomp's default, fedgray's, passive

STEP = """
import sys, time, torch
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
from fedgray.backbone.loading import create_clip
from fedgray.tasks.losses import contrastive_loss
torch.manual_seed(0)
model = create_clip("fedgray-tiny", None)
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
size = model.visual.image_size
size = size[0] if isinstance(size, (tuple, list)) else size
images = torch.randn(64, 3, size, size)
tokens = torch.randint(1, 400, (64, model.positional_embedding.shape[0]))
def step():
    loss = contrastive_loss(
        model.encode_image(images), model.encode_text(tokens), scale=torch.tensor(10.0)
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - start) / steps)
"""


@contextmanager
def hogs(count: int) -> Iterator[None]:
    """``count`` busy-looping processes for the duration."""
    started = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in started:
            process.kill()
            process.wait()


def seconds_per_step(spin: str, threads: int, steps: int) -> float:
    """One fresh process's mean step time with ``GOMP_SPINCOUNT=spin``."""
    env = {**os.environ, "GOMP_SPINCOUNT": spin}
    done = subprocess.run(
        [sys.executable, "-c", STEP, str(threads), str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run every setting alone and under load, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the step")
    parser.add_argument("--hogs", type=int, default=2, help="busy loops beside it")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of each setting")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per process")
    args = parser.parse_args()
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.reps):
        for spin in SPIN_COUNTS:
            for loaded in (False, True):
                with hogs(args.hogs if loaded else 0):
                    value = seconds_per_step(spin, args.threads, args.steps)
                times.setdefault((spin, loaded), []).append(value)
    print(f"pretraining step, fedgray-tiny, batch 64, {args.threads} threads, {args.hogs} hogs")
    print(f"{'GOMP_SPINCOUNT':>15} {'alone s':>9} {'loaded s':>9} {'slowdown':>9}")
    for spin in SPIN_COUNTS:
        alone = statistics.median(times[(spin, False)])
        busy = statistics.median(times[(spin, True)])
        print(f"{spin:>15} {alone:>9.3f} {busy:>9.3f} {busy / alone:>8.1f}x")


if __name__ == "__main__":
    main()
