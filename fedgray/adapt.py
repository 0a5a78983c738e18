"""Single-site adaptation (``fedgray adapt``): zero-shot, train, evaluate, write the run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedgray.adapters import build_model
from fedgray.config import Config
from fedgray.plots import plot_curve
from fedgray.runs import RunFolder, save_adapters
from fedgray.site import load_task_data, open_backbone
from fedgray.tasks import TASKS, evaluate
from fedgray.train import batches, train_steps


@dataclass(frozen=True)
class AdaptResult:
    """Zero-shot and adapted test metrics of one single-site run."""

    zero_shot: dict[str, float]
    adapted: dict[str, float]
    trainable: int
    fraction: float
    seconds: float
    run_dir: Path


def seed_everything(config: Config) -> None:
    """Fix torch's seed and thread count for a reproducible CPU run."""
    torch.manual_seed(config.train.seed)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)


def adapt(
    config: Config, *, progress: bool = True, echo: Callable[[str], None] = print
) -> AdaptResult:
    """Train ``config.method`` on one site's data and write a run folder."""
    seed_everything(config)
    run = RunFolder(config.output.root, config.output.name, prefix="adapt")
    run.save_config(config)
    backbone = open_backbone(config, progress=progress)
    train = load_task_data(config, backbone, split="train")
    test = load_task_data(config, backbone, split="test")
    model = build_model(backbone, config.method)
    task = TASKS[config.train.task]
    echo(
        f"{config.method.name} on {config.data.dataset} at level {backbone.level.value}: "
        f"{model.trainable_count():,} trainable ({model.trainable_fraction():.2%} of "
        f"{backbone.interface.parameter_count:,})"
    )
    started = time.perf_counter()
    zero_shot = evaluate(model, test)
    run.log({"step": 0, "seconds": 0.0, **zero_shot})
    steps = config.train.steps if model.trainable_count() else 0
    if steps:
        optimizer = torch.optim.AdamW(
            model.param_groups(config.train.lr, input_lr_scale=config.method.input_lr_scale),
            weight_decay=config.train.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
        )
        stream = batches(train, batch_size=config.train.batch_size, seed=config.train.seed)
        done = 0
        while done < steps:
            chunk = min(config.train.eval_every, steps - done)
            result = train_steps(
                model,
                task,
                train,
                stream,
                optimizer,
                steps=chunk,
                scale=backbone.interface.logit_scale,
                scheduler=schedule,
                progress=progress,
                description=f"steps {done + 1}-{done + chunk}",
            )
            done += chunk
            metrics = evaluate(model, test)
            run.log(
                {
                    "step": done,
                    "seconds": time.perf_counter() - started,
                    "loss": result.mean_loss,
                    **metrics,
                }
            )
            echo(
                f"step {done:>5}  loss {result.mean_loss:.3f}  {task.metric} "
                f"{metrics[task.metric]:.1f}  (zero-shot {zero_shot[task.metric]:.1f})"
            )
    adapted = run.records()[-1]
    adapted = {k: v for k, v in adapted.items() if k in zero_shot}
    seconds = time.perf_counter() - started
    save_adapters(
        run.path / "adapters.pt",
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        backbone=backbone.interface.name,
        method=config.method.name,
        level=backbone.level.value,
    )
    records = run.records()
    plot_curve(
        [r["step"] for r in records],
        [r[task.metric] for r in records],
        run.path / "curve.png",
        xlabel="step",
        ylabel=f"test {task.metric}",
        baseline=zero_shot[task.metric],
        title=f"{config.method.name} on {config.data.dataset}",
    )
    summary = AdaptResult(
        zero_shot, adapted, model.trainable_count(), model.trainable_fraction(), seconds, run.path
    )
    run.write_json(
        "summary.json",
        {
            "zero_shot": zero_shot,
            "adapted": adapted,
            "trainable": summary.trainable,
            "fraction": summary.fraction,
            "seconds": seconds,
        },
    )
    return summary
