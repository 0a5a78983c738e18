"""Where the owner's pretraining step spends its time, against the machine's matmul ceiling.

Builds the step ``fedgray pretrain`` takes (the built-in recipe's batch through the white
wrapper, contrastive loss, AdamW), counts its floating-point operations with torch's
``FlopCounterMode``, times it interleaved with square matmuls of the same precision
(:func:`fedgray.bench.device.matmul`), and prints the fraction of the ceiling it reaches,
what the recipe's steps would take at the ceiling, and the operators that take the time::

    python -m simulations.bench_pretrain [--threads 1] [--reps 10]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from fedgray.backbone import SealedBackbone, create_clip, get_tokenizer
from fedgray.bench.device import counted, matmul
from fedgray.bench.timing import interleaved
from fedgray.config import PretrainConfig
from fedgray.data.world_set import make_world_set
from fedgray.owner.pretrain import OWNER_OFFSET, batch_loss
from fedgray.tasks.data import prepare

MODEL = "fedgray-tiny"


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--reps", type=int, default=10, help="timed steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe, cpu = PretrainConfig(), torch.device("cpu")
    torch.manual_seed(0)
    model = create_clip(MODEL, None)
    owner = SealedBackbone(model, get_tokenizer(MODEL), name=MODEL, level="white")
    model.requires_grad_(True).train()
    world = make_world_set(
        2048, seed=0, domain="photo", caption_style="varied", offset=OWNER_OFFSET
    )
    data = prepare(world, owner.tokenize)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        index = torch.randint(len(data), (recipe.batch_size,), generator=generator)
        loss = batch_loss(owner, data, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    flops = counted(step, cpu)
    square, square_flops = matmul(cpu, torch.float32)
    times = interleaved({"step": step, "matmul": square}, warmup=2, reps=args.reps)
    seconds = statistics.median(times["step"])
    ceiling = square_flops / statistics.median(times["matmul"])
    print(
        f"{args.threads} thread(s): step {1000 * seconds:.0f} ms, {flops / 1e9:.1f} GFLOP, "
        f"{100 * flops / seconds / ceiling:.0f}% of the float32 matmul ceiling "
        f"({ceiling / 1e9:.0f} GFLOP/s); {recipe.steps} steps: {recipe.steps * seconds:.0f} s, "
        f"at the ceiling {recipe.steps * flops / ceiling:.0f} s"
    )
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(3):
            step()
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
