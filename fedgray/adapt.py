"""Single-site adaptation (``fedgray adapt``): zero-shot, train, evaluate, write the run.

The method's trainer kind (:mod:`fedgray.train.kinds`) does the training: ``gradient``
(backpropagation into the trainable modules, by the same local trainer as a federated site,
DP-SGD with ``privacy.enabled``) or ``craft`` (derivative-free, forward queries only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedgray.adapters import build_model, method_spec
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.plots import plot_curve
from fedgray.run_report import write_report
from fedgray.runs import RunFolder, check_writable, save_adapters
from fedgray.site import check_classes, load_task_data, open_backbone
from fedgray.tasks import TASKS, evaluate
from fedgray.tracking import write_tracking
from fedgray.train.job import Job
from fedgray.train.kinds import trainer_kind


@dataclass(frozen=True)
class AdaptResult:
    """Zero-shot and adapted test metrics of one single-site run.

    ``queries``: calls the run made to the backbone (evaluation included); ``privacy``:
    the final DP accounting (epsilon, delta, noise multiplier, sample rate) under DP-SGD.
    """

    zero_shot: dict[str, float]
    adapted: dict[str, float]
    trainable: int
    fraction: float
    seconds: float
    run_dir: Path
    queries: int
    privacy: dict[str, float] | None = None


def seed_everything(config: Config) -> None:
    """Fix torch's seed and thread count for a reproducible CPU run."""
    torch.manual_seed(config.train.seed)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)


def adapt(
    config: Config, *, progress: bool = True, echo: Callable[[str], None] = print
) -> AdaptResult:
    """Train ``config.method`` on one site's data and write a run folder."""
    spec = method_spec(config.method.name)
    if config.train.task not in spec.tasks:
        raise ConfigError(
            f"train.task: method '{spec.name}' supports {', '.join(spec.tasks)}, "
            f"not {config.train.task}"
        )
    seed_everything(config)
    named = Path(config.output.root) / config.output.name if config.output.name else None
    if named is not None and (named / "summary.json").is_file():
        raise ValueError(f"{named} already holds a finished run: choose another output.name")
    check_writable(named or Path(config.output.root))
    check_classes(config.data.dataset)
    backbone = open_backbone(config, progress=progress)  # checks first: no folder for a
    train = load_task_data(config, backbone, split="train")  # run that cannot start
    test = load_task_data(config, backbone, split="test")
    model = build_model(backbone, config.method)
    run = RunFolder(config.output.root, config.output.name, prefix="adapt")
    run.save_config(config)
    task = TASKS[config.train.task]
    started = time.perf_counter()
    zero_shot = evaluate(model, test)
    run.log({"step": 0, "seconds": 0.0, **zero_shot})
    job = Job(config, model, train, test, run, zero_shot, started, progress, echo)
    trained = trainer_kind(spec.trainer).adapt(job)
    seconds = time.perf_counter() - started
    save_adapters(
        run.path / "adapters.pt",
        trained.state,
        backbone=backbone.interface.name,
        method=config.method.name,
        level=backbone.level.value,
    )
    records = run.records()
    plot_curve(
        [r.get(trained.axis, 0) for r in records],  # zero-shot is at 0 on every axis
        [r[task.metric] for r in records],
        run.path / "curve.png",
        xlabel=trained.axis,
        ylabel=f"test {task.metric}",
        baseline=zero_shot[task.metric],
        title=f"{config.method.name} on {config.data.dataset}",
    )
    summary = AdaptResult(
        zero_shot,
        trained.adapted,
        trained.trainable,
        trained.trainable / backbone.interface.parameter_count,
        seconds,
        run.path,
        backbone.queries_used,
        trained.privacy,
    )
    run.write_json(
        "summary.json",
        {
            "zero_shot": zero_shot,
            "adapted": trained.adapted,
            "trainable": summary.trainable,
            "fraction": summary.fraction,
            "seconds": seconds,
            "queries": summary.queries,
            "samples": backbone.spent.samples,  # and gradients: against the backbone's budget
            "gradients": backbone.spent.gradients,
            "privacy": trained.privacy,
        },
    )
    write_report(run.path, metric=task.metric)
    write_tracking(run.path, config.output.track, run.records())
    return summary
