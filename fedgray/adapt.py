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

from fedgray.adapters import Method, build_model, method_spec
from fedgray.backbone import Backbone
from fedgray.config import Config, TrainConfig
from fedgray.config_schema import ConfigError
from fedgray.materials import check_splits, load_task_data, open_backbone
from fedgray.plots import plot_curve
from fedgray.run_report import write_report
from fedgray.runs import RunFolder, check_writable, save_adapters
from fedgray.tasks import TASKS, TaskData, evaluate
from fedgray.tasks.metrics import evaluation_calls
from fedgray.tracking import write_tracking
from fedgray.train.gradient import adapted_model
from fedgray.train.job import Job
from fedgray.train.kinds import TrainerKind, trainer_kind

ON_TEST = "the test split, read once after training"
ON_VALIDATION = "the validation split"


@dataclass(frozen=True)
class AdaptResult:
    """Zero-shot and adapted test metrics of one single-site run (the test split is read
    once, after training; the learning curve is the validation split's).

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


def seed_everything(train: TrainConfig) -> None:
    """Fix torch's seed and thread count for a reproducible CPU run."""
    torch.manual_seed(train.seed)
    if train.threads is not None:
        torch.set_num_threads(train.threads)


def check_adapt(config: Config) -> Method:
    """What ``fedgray adapt`` checks of ``config`` before it opens the backbone (the method
    does the task; the dataset holds the sizes asked); the method's row."""
    spec = method_spec(config.method.name)
    if config.train.task not in spec.tasks:
        raise ConfigError(
            f"train.task: method '{spec.name}' supports {', '.join(spec.tasks)}, "
            f"not {config.train.task}"
        )
    check_splits(config.data)
    return spec


def check_query_budget(
    config: Config, backbone: Backbone, kind: TrainerKind, validation: TaskData, test: TaskData
) -> None:
    """Refuse, before a run folder exists, a ``backbone.query_budget`` that the run would
    spend before its end: the zero-shot read of validation, the training (as its kind
    plans it) and the test read after it (the trained and the initial adapters). A budget
    that covered training only would otherwise fail at the test read, after all the work."""
    budget = backbone.query_budget
    if budget is None or kind.adapt_queries is None:
        return
    training = kind.adapt_queries(config, validation, test)
    zero_shot = evaluation_calls(validation) + evaluation_calls(test)
    left = budget - backbone.queries_used
    if training + zero_shot > left:
        raise ConfigError(
            f"backbone.query_budget: {left:,} calls left, but this run makes up to "
            f"{training + zero_shot:,}: {training:,} to train (method.{config.method.name}) "
            f"and score the result on test, {zero_shot:,} for the zero-shot validation and "
            "test reads"
        )


def adapt(
    config: Config, *, progress: bool = True, echo: Callable[[str], None] = print
) -> AdaptResult:
    """Train ``config.method`` on one site's data and write a run folder."""
    spec = check_adapt(config)
    seed_everything(config.train)
    named = Path(config.output.root) / config.output.name if config.output.name else None
    if named is not None and (named / "summary.json").is_file():
        raise ValueError(f"{named} already holds a finished run: choose another output.name")
    check_writable(named or Path(config.output.root))
    data = config.data
    backbone = open_backbone(config, progress=progress)  # checks first: no folder for a
    train = load_task_data(data, backbone, split="train")  # run that cannot start
    validation = load_task_data(data, backbone, split="validation")
    test = load_task_data(data, backbone, split="test")
    model = build_model(backbone, config.method)
    kind = trainer_kind(spec.trainer)
    check_query_budget(config, backbone, kind, validation, test)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    run = RunFolder(config.output.root, config.output.name, prefix="adapt")
    run.save_config(config)
    task = TASKS[config.train.task]
    started = time.perf_counter()
    zero_shot_validation = evaluate(model, validation)
    run.log({"step": 0, "seconds": 0.0, **zero_shot_validation})
    job = Job(config, model, train, validation, run, zero_shot_validation, started, progress, echo)
    trained = kind.adapt(job)
    # The test split's one reading: the returned and the initial adapters, after training.
    adapted = trained.score(test)
    zero_shot = evaluate(adapted_model(config.method, backbone, initial), test)
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
        ylabel=f"{task.metric} ({ON_VALIDATION})",
        baseline=zero_shot_validation[task.metric],
        title=f"{config.method.name} on {config.data.dataset}",
    )
    summary = AdaptResult(
        zero_shot,
        adapted,
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
            "evaluated_on": ON_TEST,
            "zero_shot": zero_shot,
            "adapted": adapted,
            "curve_on": ON_VALIDATION,
            "validation": {"zero_shot": zero_shot_validation, "adapted": trained.validation},
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
