"""What a site does with the global adapters: train them locally, or evaluate them.

Only adapter tensors come in and go out; the backbone and the data stay in this process.
Adapters named by ``federation.personal`` prefixes never leave the site: they live in the
node's ``context.state`` between rounds. Local randomness (initialisation of personal
adapters, batch order) is seeded from (federation seed, round, partition).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.adapters.methods import method_spec
from fedgray.config import Config
from fedgray.fl import craft_site
from fedgray.fl.cache import shared_backbone
from fedgray.fl.central import aggregation_weight
from fedgray.fl.private import LEDGER, check_budget, ledger_reply, site_ledger
from fedgray.fl.records import from_record, to_record
from fedgray.fl.sites import SiteData, site_data
from fedgray.privacy import make_private, plan_noise, private_task
from fedgray.tasks import TASKS, Task, TaskData, evaluate
from fedgray.train import batches, train_steps
from strategies import ORDER_KEY, split_personal

PERSONAL_STATE = "personal-adapters"


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A 32-bit seed that depends on (seed, round, partition) only."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


@dataclass
class Site:
    """One simulated site: its partition number, data and model around the shared backbone."""

    config: Config
    partition_id: int
    data: SiteData

    @classmethod
    def open(cls, config: Config, *, partition_id: int, num_partitions: int) -> Site:
        """The site of ``partition_id`` (backbone and data come from per-process caches)."""
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        data = site_data(config, partition_id=partition_id, num_partitions=num_partitions)
        return cls(config, partition_id, data)

    def model(self, arrays: ArrayRecord, state: RecordDict) -> AdaptedCLIP:
        """Adapters at identity, then the global ones, then this site's personal ones."""
        model = build_model(shared_backbone(self.config), self.config.method)
        weights = model.state_dict()
        weights.update(from_record(arrays))
        if PERSONAL_STATE in state:
            weights.update(from_record(state[PERSONAL_STATE]))
        model.load_state_dict(weights)
        return model

    def train(
        self,
        arrays: ArrayRecord,
        state: RecordDict,
        *,
        server_round: int,
        proximal_mu: float,
        settings: ConfigRecord | None = None,
    ) -> tuple[ArrayRecord, dict[str, float], RecordDict]:
        """Local training from the global arrays by the method's trainer (see
        :data:`SITE_TRAINERS`): the shared arrays, metrics and other records."""
        seed = round_seed(self.config.federation.seed, server_round, self.partition_id)
        torch.manual_seed(seed)
        trainer = SITE_TRAINERS[method_spec(self.config.method.name).trainer]
        return trainer.train(
            self, arrays, state, seed=seed, proximal_mu=proximal_mu, settings=settings
        )

    def evaluate(self, arrays: ArrayRecord, state: RecordDict) -> dict[str, float]:
        """Metrics of the global arrays on this site's held-out samples."""
        trainer = SITE_TRAINERS[method_spec(self.config.method.name).trainer]
        return {"num-examples": len(self.data.heldout), **trainer.evaluate(self, arrays, state)}


def train_by_gradient(
    site: Site,
    arrays: ArrayRecord,
    state: RecordDict,
    *,
    seed: int,
    proximal_mu: float,
    settings: ConfigRecord | None = None,
) -> tuple[ArrayRecord, dict[str, float], RecordDict]:
    """Local steps from the global adapters (and ``site``'s personal ones), seeded by ``seed``.

    With ``privacy.enabled`` the steps are DP-SGD (see :mod:`fedgray.fl.private`); a site
    whose budget would be exceeded raises :class:`~fedgray.fl.private.BudgetExhausted`.
    """
    model = site.model(arrays, state)
    train, privacy = site.config.train, site.config.privacy
    steps = site.config.federation.local_steps
    records = RecordDict()
    if privacy.enabled:
        if proximal_mu > 0:
            raise ValueError("FedProx's proximal term is not a per-sample loss: not with DP")
        task = private_task(train.task, model)
        ledger = site_ledger(
            state, settings or ConfigRecord(), privacy, partition_id=site.partition_id
        )
        plan = plan_noise(
            privacy,
            num_samples=len(site.data.train),
            batch_size=train.batch_size,
            total_steps=steps * site.config.federation.num_rounds,
        )
        check_budget(ledger, plan, privacy, steps=steps, partition_id=site.partition_id)
    else:
        task = _with_proximal(TASKS[train.task], model, proximal_mu)
    optimizer = torch.optim.AdamW(
        model.param_groups(train.lr, input_lr_scale=site.config.method.input_lr_scale),
        weight_decay=train.weight_decay,
    )
    stream = batches(site.data.train, batch_size=train.batch_size, seed=seed)
    if privacy.enabled:
        private = make_private(
            model,
            site.data.train,
            optimizer,
            plan=plan,
            max_grad_norm=privacy.max_grad_norm,
            ledger=ledger,
            seed=seed,
        )
        optimizer, stream = private.optimizer, private.stream
    result = train_steps(
        model,
        task,
        site.data.train,
        stream,
        optimizer,
        steps=steps,
        scale=shared_backbone(site.config).interface.logit_scale,
    )
    shared, personal = split_personal(model.state_dict(), site.config.federation.personal)
    if personal:
        state[PERSONAL_STATE] = to_record(personal)
    metrics = {
        "num-examples": aggregation_weight(site.config, len(site.data.train)),
        "train-loss": result.mean_loss,
        ORDER_KEY: site.partition_id,
    }
    if privacy.enabled:
        private.close()
        ledger = private.ledger()
        epsilon = ledger.epsilon(privacy.delta)
        state[LEDGER] = ledger.to_record()
        records[LEDGER] = ledger_reply(ledger, partition_id=site.partition_id, epsilon=epsilon)
        metrics.update(
            {
                "epsilon": epsilon,
                "delta": privacy.delta,
                "noise-multiplier": plan.noise_multiplier,
                "sample-rate": plan.sample_rate,
            }
        )
    return to_record(shared), metrics, records


def evaluate_adapters(site: Site, arrays: ArrayRecord, state: RecordDict) -> dict[str, float]:
    """Metrics of the global (plus ``site``'s personal) adapters on its held-out samples."""
    return evaluate(site.model(arrays, state), site.data.heldout)


def _with_proximal(task: Task, model: AdaptedCLIP, mu: float) -> Task:
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


@dataclass(frozen=True)
class SiteTrainer:
    """How a site trains and evaluates the shared arrays of methods with one trainer."""

    train: Callable[..., tuple[ArrayRecord, dict[str, float], RecordDict]]
    evaluate: Callable[[Site, ArrayRecord, RecordDict], dict[str, float]]


SITE_TRAINERS: dict[str, SiteTrainer] = {
    "gradient": SiteTrainer(train_by_gradient, evaluate_adapters),
    "craft": SiteTrainer(craft_site.train_site, craft_site.evaluate_site),
}
