"""Where the owner's pretraining spends its wall time, phase by phase, on this machine.

``fedgray pretrain`` renders the owner's images, tokenises their captions, takes the
recipe's training steps and saves the checkpoint. This times each phase with the recipe's
own sizes: rendering in one loop and over the worker pool pretraining uses, interleaved
``--reps`` times (their ratio cancels the load common to a pair, and both must give the
same images), the training step with torch's AdamW over the whole token-embedding table and
with :class:`~fedgray.owner.embedding_rows.UsedRowsAdamW`, interleaved over ``--steps`` steps
and scaled to the recipe's count (the step's cost does not change along the schedule), and
a save to a temporary folder. Both optimisers take the same batches, so their weights
must come out equal, bit for bit::

    python -m simulations.time_pretrain [--steps 20] [--reps 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from fedgray.backbone import SealedBackbone, create_clip, get_tokenizer
from fedgray.backbone.families import text_parts
from fedgray.bench.timing import interleaved, paired_ratio
from fedgray.config import PretrainConfig
from fedgray.data.sets import ImageTextSet
from fedgray.owner.embedding_rows import UsedRowsAdamW
from fedgray.owner.pretrain import batch_loss, owner_photos
from fedgray.tasks.data import prepare

MODEL = "fedgray-tiny"
T = TypeVar("T")


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """``work()``'s result and its wall seconds."""
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    """Measure and print one line per phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--reps", type=int, default=1, help="interleaved rendering pairs")
    args = parser.parse_args()
    recipe, workers = PretrainConfig(), os.cpu_count() or 1
    print(f"{workers} cores, {torch.get_num_threads()} torch threads, load {os.getloadavg()}")

    rendered: dict[str, ImageTextSet] = {}

    def render(pool: int) -> Callable[[], object]:
        def run() -> None:
            rendered[str(pool)] = owner_photos(recipe, workers=pool)

        return run

    times = interleaved({"loop": render(1), "pool": render(workers)}, warmup=0, reps=args.reps)
    same = torch.equal(rendered["1"].images, rendered[str(workers)].images)
    print(
        f"render {recipe.train_size} images: one loop {statistics.median(times['loop']):.1f} s, "
        f"{workers} workers {statistics.median(times['pool']):.1f} s "
        f"({paired_ratio(times['pool'], times['loop']):.2f}x); the same images: {same}"
    )

    models: dict[str, nn.Module] = {}
    for mode in ("all rows", "used rows"):
        torch.manual_seed(recipe.seed)
        models[mode], seconds = timed(lambda: create_clip(MODEL, None))
    owners = {
        mode: SealedBackbone(model, get_tokenizer(MODEL), name=MODEL, level="white")
        for mode, model in models.items()
    }
    print(f"build the model: {seconds:.1f} s")
    data, seconds = timed(lambda: prepare(rendered["1"], owners["all rows"].tokenize))
    print(f"tokenise {len(data)} captions: {seconds:.1f} s")

    for model in models.values():
        model.requires_grad_(True).train()
    optimizers: dict[str, torch.optim.Optimizer | UsedRowsAdamW] = {
        "all rows": torch.optim.AdamW(
            models["all rows"].parameters(), lr=recipe.lr, weight_decay=0.1
        ),
        "used rows": UsedRowsAdamW(
            models["used rows"].parameters(),
            table=text_parts(models["used rows"]).embedding.weight,
            rows=torch.unique(data.tokens),
            lr=recipe.lr,
            weight_decay=0.1,
        ),
    }
    generators = {mode: torch.Generator().manual_seed(recipe.seed) for mode in models}

    def step(mode: str) -> Callable[[], object]:
        def run() -> None:
            index = torch.randint(len(data), (recipe.batch_size,), generator=generators[mode])
            loss = batch_loss(owners[mode], data, index)
            models[mode].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[mode].step()
            loss.item()

        return run

    steps = interleaved({mode: step(mode) for mode in models}, warmup=1, reps=args.steps)
    for mode, each in steps.items():
        print(
            f"train, AdamW over the table's {mode}: {1000 * statistics.median(each):.0f} ms a "
            f"step of batch {recipe.batch_size}; the recipe's {recipe.steps} steps: "
            f"{recipe.steps * statistics.median(each):.0f} s"
        )
    print(f"used rows / all rows: {paired_ratio(steps['used rows'], steps['all rows']):.2f}x")
    rows = optimizers["used rows"]
    assert isinstance(rows, UsedRowsAdamW)
    _, seconds = timed(rows.finish)  # the weight decay of every step taken, on the unused rows
    taken = args.steps + 1
    print(
        f"finish: {seconds:.2f} s for {taken} steps, "
        f"{recipe.steps * seconds / taken:.1f} s for the recipe's"
    )
    weights = {mode: model.state_dict() for mode, model in models.items()}
    same = all(torch.equal(w, weights["used rows"][k]) for k, w in weights["all rows"].items())
    print(f"the same weights after the same {taken} steps: {same}")
    model = models["used rows"]
    with tempfile.TemporaryDirectory() as folder:
        _, seconds = timed(
            lambda: torch.save({"state_dict": model.state_dict()}, Path(folder) / "owner.pt")
        )
    print(f"save: {seconds:.2f} s; load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
