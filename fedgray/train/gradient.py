"""The gradient trainer: backpropagation into the trainable modules around the backbone."""

from __future__ import annotations

import math
import time

import torch

from fedgray.tasks import TASKS, evaluate
from fedgray.train.job import Job, Trained
from fedgray.train.local import batches, train_steps


def train_gradient(job: Job) -> Trained:
    """AdamW with a cosine schedule for ``train.steps``, evaluated every ``train.eval_every``."""
    config, model = job.config, job.model
    task = TASKS[config.train.task]
    job.header(
        f"{model.trainable_count():,} trainable ({model.trainable_fraction():.2%} of "
        f"{model.backbone.interface.parameter_count:,})"
    )
    steps = config.train.steps if model.trainable_count() else 0
    adapted = job.zero_shot
    if steps:
        optimizer = torch.optim.AdamW(
            model.param_groups(config.train.lr, input_lr_scale=config.method.input_lr_scale),
            weight_decay=config.train.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
        )
        stream = batches(job.train, batch_size=config.train.batch_size, seed=config.train.seed)
        done = 0
        while done < steps:
            chunk = min(config.train.eval_every, steps - done)
            result = train_steps(
                model,
                task,
                job.train,
                stream,
                optimizer,
                steps=chunk,
                scale=model.backbone.interface.logit_scale,
                scheduler=schedule,
                progress=job.progress,
                description=f"steps {done + 1}-{done + chunk}",
            )
            done += chunk
            adapted = evaluate(model, job.test)
            job.run.log(
                {
                    "step": done,
                    "seconds": time.perf_counter() - job.started,
                    "loss": result.mean_loss,
                    **adapted,
                }
            )
            job.echo(
                f"step {done:>5}  loss {result.mean_loss:.3f}  {task.metric} "
                f"{adapted[task.metric]:.1f}  (zero-shot {job.zero_shot[task.metric]:.1f})"
            )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Trained(adapted=adapted, state=state, trainable=model.trainable_count())
