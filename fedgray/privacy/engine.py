"""Opacus DP-SGD on the adapters: noise calibration, Poisson batches, clipping and noise.

The pieces are Opacus' own, put together as ``PrivacyEngine.make_private`` does, with one
difference: the accountant is the site's ledger (its history across all rounds), not a
fresh one. The ``GradSampleModule`` wraps the whole :class:`AdaptedCLIP` composite, whose
only submodules are the trainable adapters; the sealed backbone is a plain attribute, so
gradients flow through it while only adapter parameters get per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
from opacus import GradSampleModule
from opacus.accountants import IAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator

from fedgray.config import PrivacyConfig
from fedgray.privacy.ledger import Ledger
from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Batch


@dataclass(frozen=True)
class NoisePlan:
    """One site's DP-SGD setting: noise multiplier and Poisson sample rate."""

    noise_multiplier: float
    sample_rate: float


def plan_noise(
    privacy: PrivacyConfig, *, num_samples: int, batch_size: int, total_steps: int
) -> NoisePlan:
    """The configured noise multiplier, or the one reaching ``target_epsilon`` after
    ``total_steps`` steps (the whole planned run) at ``delta`` with the configured accountant.
    """
    sample_rate = min(1.0, batch_size / num_samples)
    if privacy.noise_multiplier is not None:
        return NoisePlan(privacy.noise_multiplier, sample_rate)
    sigma = _calibrated(
        privacy.target_epsilon, privacy.delta, sample_rate, total_steps, privacy.accountant
    )
    return NoisePlan(sigma, sample_rate)


@lru_cache(maxsize=64)
def _calibrated(epsilon: float, delta: float, sample_rate: float, steps: int, kind: str) -> float:
    """Opacus' noise calibration, once per process for each setting (every site, every round
    asks; the binary search over accountant evaluations takes seconds)."""
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=kind,
        )
    )


def poisson_batches(data: TaskData, *, sample_rate: float, seed: int) -> Iterator[Batch]:
    """Endless Poisson-sampled batches: each sample joins each batch with ``sample_rate``."""
    loader = DPDataLoader(
        data.as_dataset(),
        sample_rate=sample_rate,
        generator=torch.Generator().manual_seed(seed),
    )
    while True:
        yield from loader


@dataclass
class PrivateTraining:
    """What a DP-SGD run steps: the hooked model, the DP optimizer, batches, accountant."""

    module: GradSampleModule
    optimizer: DPOptimizer
    stream: Iterator[Batch]
    accountant: IAccountant
    kind: str

    def ledger(self) -> Ledger:
        """The site's ledger including the steps taken so far."""
        return Ledger.of(self.accountant, self.kind)

    def close(self) -> None:
        """Remove Opacus' hooks from the model."""
        self.module._close()


def make_private(
    model: torch.nn.Module,
    data: TaskData,
    optimizer: torch.optim.Optimizer,
    *,
    plan: NoisePlan,
    max_grad_norm: float,
    ledger: Ledger,
    seed: int,
) -> PrivateTraining:
    """Wrap ``model``/``optimizer`` for DP-SGD; every optimizer step is added to ``ledger``.

    The loss must be the mean of per-sample losses over the (Poisson) batch; the noisy sum
    of clipped per-sample gradients is divided by the expected batch size.
    """
    ModuleValidator.validate(model, strict=True)
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    expected = max(1, round(plan.sample_rate * len(data)))
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected,
        loss_reduction="mean",
    )
    accountant = ledger.make_accountant()
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
    stream = poisson_batches(data, sample_rate=plan.sample_rate, seed=seed)
    return PrivateTraining(module, dp_optimizer, stream, accountant, ledger.accountant)
