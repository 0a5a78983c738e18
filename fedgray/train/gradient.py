"""The ``gradient`` trainer kind: backpropagation into the trainable modules around the
backbone, by the one local trainer (:class:`~fedgray.train.trainer.LocalTrainer`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.backbone import Backbone
from fedgray.config import Config, MethodConfig
from fedgray.privacy.planted import Planted, planted_at_site
from fedgray.privacy.sampling_check import BatchSizes, check_sampling
from fedgray.tasks import TASKS, Task, TaskData, evaluate
from fedgray.train.job import Job, Trained
from fedgray.train.kinds import SiteRound, SiteUpdate, State, TrainerKind, register
from fedgray.train.schedule import Schedule
from fedgray.train.trainer import LocalTrainer


def train_gradient(job: Job) -> Trained:
    """``train.steps`` steps (DP-SGD with ``privacy.enabled``), evaluated on the validation
    split every ``train.eval_every``; epsilon, when accounted, is logged with every
    evaluation."""
    config, model = job.config, job.model
    task = TASKS[config.train.task]
    job.header(
        f"{model.trainable_count():,} trainable ({model.trainable_fraction():.2%} of "
        f"{model.backbone.interface.parameter_count:,})"
        + (", DP-SGD" if config.privacy.enabled else "")
    )
    adapted, privacy = job.zero_shot, None
    if config.train.steps and model.trainable_count():
        trainer = LocalTrainer(
            config,
            model,
            job.train,
            schedule=Schedule.single_site(config.train),
            seed=config.train.seed,
            who="fedgray adapt",
        )
        done = 0
        while done < config.train.steps:
            chunk = min(config.train.eval_every, config.train.steps - done)
            result = trainer.run(
                chunk, progress=job.progress, description=f"steps {done + 1}-{done + chunk}"
            )
            done += chunk
            adapted = evaluate(model, job.validation)
            report = trainer.privacy()
            privacy = report.metrics() if report is not None else None
            job.run.log(
                {
                    "step": done,
                    "seconds": time.perf_counter() - job.started,
                    "loss": result.mean_loss,
                    **adapted,
                    **(privacy or {}),
                }
            )
            job.echo(
                f"step {done:>5}  loss {result.mean_loss:.3f}  validation {task.metric} "
                f"{adapted[task.metric]:.1f}  (zero-shot {job.zero_shot[task.metric]:.1f})"
                + (f"  epsilon {privacy['epsilon']:.3f}" if privacy else "")
            )
        trainer.close()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Trained(
        validation=adapted,
        score=lambda data: evaluate(model, data),
        state=state,
        trainable=model.trainable_count(),
        privacy=privacy,
    )


def adapted_model(method: MethodConfig, backbone: Backbone, state: State) -> AdaptedCLIP:
    """``method``'s model with ``state`` over its initial tensors."""
    model = build_model(backbone, method)
    weights = model.state_dict()
    weights.update(state)
    model.load_state_dict(weights)
    return model


def start(config: Config, backbone: Backbone, _data: Callable[[], TaskData]) -> State:
    """The trainable tensors at initialisation (identity maps), seeded by ``federation.seed``."""
    torch.manual_seed(config.federation.seed)
    return dict(build_model(backbone, config.method).state_dict())


def train_round(site: SiteRound) -> SiteUpdate:
    """``federation.local_steps`` steps from the global (and the site's personal) tensors."""
    config = site.config
    model = adapted_model(config.method, site.backbone, {**site.shared, **site.personal})
    planted = planted_at_site(config, model, site.data, partition_id=site.partition_id)
    trainer = LocalTrainer(
        config,
        model,
        site.data if planted is None else planted.data,
        schedule=Schedule.federated(config, site.server_round),
        seed=site.seed,
        ledger=site.ledger,
        proximal_mu=site.proximal_mu,
        who=f"site {site.partition_id}",
        feature_rows=planted.rows if planted is not None else None,
    )
    batches = None
    if planted is not None:  # the audited site: the sampler's output, checked after the run
        batches = trainer.stream = BatchSizes(trainer.stream)
    before = site.backbone.spent
    result = trainer.run()
    report = trainer.close()
    metrics = {"train-loss": result.mean_loss} if result.losses else {}
    # what this round spent of the site's backbone budget: queries, samples, gradients
    metrics.update((site.backbone.spent - before).as_dict())
    metrics.update(report.metrics() if report is not None else {})
    drawn = (*site.drawn, *batches.sizes) if batches is not None else ()
    audit = None
    if planted is not None and site.server_round == config.federation.num_rounds:
        audit = _audit(site, planted, model, trainer.task)
        assert trainer.plan is not None  # privacy.audit needs privacy.enabled: always a plan
        audit.update(_sampling(list(drawn), rows=len(trainer.data), rate=trainer.plan.sample_rate))
    return SiteUpdate(
        dict(model.state_dict()),
        metrics,
        report.ledger if report is not None else None,
        audit,
        drawn,
    )


def _audit(
    site: SiteRound, planted: Planted, trained: AdaptedCLIP, task: Task
) -> dict[str, int | float | str]:
    """The audit's evidence after the site's last round: its canaries scored by how much
    the whole run lowered their loss, from the run's initial adapters to the update this
    site releases (its own, not the average: other sites do not dilute it)."""
    config = site.config
    with torch.random.fork_rng():  # ``start`` seeds torch as the server does
        initial = adapted_model(
            config.method, site.backbone, start(config, site.backbone, lambda: site.data)
        )
    scores = planted.losses(initial, task) - planted.losses(trained, task)
    guesses = config.privacy.audit_guesses
    return {
        "audit-canaries": len(planted.members),
        "audit-guesses": guesses,
        "audit-correct": planted.right_guesses(scores, guesses=guesses),
    }


def _sampling(sizes: list[int], *, rows: int, rate: float) -> dict[str, int | float | str]:
    """The sampler check over the batches the audited site drew in the run (every round
    trains the same rows at the same rate): how many, their p-value under Poisson sampling
    at the accountant's rate, and the one-line refutation when there is one. Only these
    leave the site, not the sizes."""
    verdict = check_sampling(sizes, rows=rows, rate=rate)
    evidence: dict[str, int | float | str] = {
        "audit-batches": len(sizes),
        "audit-sampling-p": verdict.p_value,
    }
    if verdict.refuted is not None:
        evidence["audit-sampling"] = verdict.refuted
    return evidence


def score(config: Config, backbone: Backbone, state: State, data: TaskData) -> dict[str, float]:
    """Metrics of ``state`` on ``data`` (tensors it lacks keep their initial values). It
    reads the method only, but takes the whole config as every kind's ``score`` does: CraFT's
    also reads ``train`` and ``federation``."""
    return evaluate(adapted_model(config.method, backbone, state), data)


GRADIENT = register(TrainerKind("gradient", train_gradient, start, train_round, score))
