"""The one local trainer: how any site trains, for ``fedgray adapt`` and federated sites.

One object does, in this order, what a site's training needs: the objective (per-sample
under DP, with FedProx's proximal term otherwise), DP planning (noise for the whole
planned run), the budget check, AdamW with the cosine schedule of :mod:`.schedule`,
Opacus' wrapping, the local steps and the ledger's read-out. ``fedgray adapt`` calls it
with a fresh ledger and evaluates between chunks of steps; a federated site calls it with
its ledger across rounds (:mod:`fedgray.fl` only turns Flower records into this call and
back). Both therefore get the same DP-SGD and the same accounting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedgray.adapters.model import AdaptedCLIP
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.devices import autocast
from fedgray.privacy import Ledger, NoisePlan, PrivateTraining, make_private, plan_noise
from fedgray.privacy.budget import check_budget
from fedgray.privacy.canaries import joined
from fedgray.privacy.features import cached_head
from fedgray.privacy.objectives import private_task
from fedgray.tasks import TASKS, Task, TaskData
from fedgray.train.local import TrainResult, batches, train_steps
from fedgray.train.optimizers import OPTIMIZERS
from fedgray.train.schedule import Schedule


@dataclass(frozen=True)
class PrivacyReport:
    """Where a DP-SGD trainer's accounting stands: its ledger and epsilon at ``delta``."""

    ledger: Ledger
    epsilon: float
    delta: float
    plan: NoisePlan

    def metrics(self) -> dict[str, float]:
        """The report as metrics (the same keys in ``fedgray adapt`` and site replies)."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise-multiplier": self.plan.noise_multiplier,
            "sample-rate": self.plan.sample_rate,
        }


class LocalTrainer:
    """Local steps of ``config.train`` on ``model`` over ``data``, DP-SGD when
    ``privacy.enabled``.

    ``ledger``: the accounting history so far (a federated site's; None: a fresh one);
    ``who`` names the trainer in a budget refusal; ``seed`` fixes the batch order (and,
    under DP, Poisson sampling); ``feature_rows``: rows given as backbone features, joined
    to ``data`` after its features are cached (the audit's feature canaries). Raises
    :class:`~fedgray.privacy.budget.BudgetExhausted` when the planned steps would exceed
    ``privacy.epsilon_budget``.
    """

    def __init__(
        self,
        config: Config,
        model: AdaptedCLIP,
        data: TaskData,
        *,
        schedule: Schedule,
        seed: int,
        ledger: Ledger | None = None,
        proximal_mu: float = 0.0,
        who: str = "site",
        feature_rows: TaskData | None = None,
    ) -> None:
        train, privacy = config.train, config.privacy
        if feature_rows is not None and not (privacy.enabled and privacy.cache_features):
            raise ConfigError(
                "privacy.cache_features: rows given as features need DP-SGD on cached features"
            )
        self.model, self.data, self.schedule, self.delta = model, data, schedule, privacy.delta
        self.stepped: torch.nn.Module = model  # the module stepped: ``model`` or its cached head
        self.taken = 0
        self.plan: NoisePlan | None = None
        self._private: PrivateTraining | None = None
        if privacy.enabled:
            if proximal_mu > 0:
                raise ValueError(
                    "federation.strategy_options: FedProx's proximal term is not a per-sample "
                    "loss: not with privacy.enabled"
                )
            self.task = private_task(train.task, model, privacy.objective, privacy.loss_scale)
            if privacy.cache_features:  # only output modules train: step them over features
                self.stepped, data = cached_head(model, data)
                if feature_rows is not None:
                    data = joined(data, feature_rows)
                self.data = data
            ledger = ledger if ledger is not None else Ledger(privacy.accountant)
            self.plan = plan_noise(
                privacy,
                num_samples=len(data),
                batch_size=train.batch_size,
                total_steps=schedule.planned,
                ledger=ledger,  # a target holds across changes of plan (rounds added)
                remaining_steps=schedule.remaining,
            )
            check_budget(ledger, self.plan, privacy, steps=schedule.steps, who=who)
        else:
            self.task = with_proximal(TASKS[train.task], model, proximal_mu)
        groups = model.param_groups(train.lr, input_lr_scale=config.method.input_lr_scale)
        self.trainable = bool(groups)  # zero-shot: nothing to step (and nothing to account)
        optimizer = OPTIMIZERS[train.optimizer](
            groups or [{"params": [torch.zeros(0, requires_grad=True)], "lr": train.lr}],
            train.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
        self.stream = batches(data, batch_size=train.batch_size, seed=seed)
        if self.plan is not None and ledger is not None and self.trainable:
            self._private = make_private(
                self.stepped,
                data,
                optimizer,
                plan=self.plan,
                max_grad_norm=privacy.max_grad_norm,
                ledger=ledger,
                seed=seed,
                secure_mode=privacy.secure_mode,
            )
            optimizer, self.stream = self._private.optimizer, self._private.stream
        self.optimizer = optimizer
        # DP-SGD in float32: per-sample norms and clipping as the accountant assumes them.
        precision = "float32" if privacy.enabled else train.precision
        self.autocast = autocast(model.backbone.device, precision)

    def run(
        self, steps: int | None = None, *, progress: bool = False, description: str = "train"
    ) -> TrainResult:
        """Take ``steps`` more steps (default: the rest of the schedule)."""
        steps = self.schedule.steps - self.taken if steps is None else steps
        if self.taken + steps > self.schedule.steps:
            raise ValueError(
                f"{steps} more steps would exceed the {self.schedule.steps} planned (and "
                "budget-checked) ones"
            )
        if not self.trainable:
            self.taken += steps
            return TrainResult()
        result = train_steps(
            self.stepped,
            self.task,
            self.data,
            self.stream,
            self.optimizer,
            steps=steps,
            scale=self.model.backbone.interface.logit_scale,
            scheduler=self.scheduler,
            progress=progress,
            description=description,
            autocast=self.autocast,
        )
        self.taken += steps
        return result

    def privacy(self) -> PrivacyReport | None:
        """The accounting so far (None without DP)."""
        if self._private is None or self.plan is None:
            return None
        ledger = self._private.ledger()
        return PrivacyReport(ledger, ledger.epsilon(self.delta), self.delta, self.plan)

    def close(self) -> PrivacyReport | None:
        """Remove Opacus' hooks from the model; the final accounting (None without DP)."""
        report = self.privacy()
        if self._private is not None:
            self._private.close()
            self._private = None
        return report


def with_proximal(task: Task, model: AdaptedCLIP, mu: float) -> Task:
    """``task`` with FedProx's ``mu / 2 * ||w - w_global||^2`` added to its loss."""
    if mu <= 0:
        return task
    anchor = [p.detach().clone() for p in model.parameters()]

    def loss(
        m: torch.nn.Module, batch: tuple[torch.Tensor, ...], data: TaskData, scale: float
    ) -> torch.Tensor:
        prox = sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
        return task.loss(m, batch, data, scale) + 0.5 * mu * prox

    return Task(task.name, task.metric, loss)
