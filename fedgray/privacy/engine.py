"""Opacus DP-SGD on the adapters: noise calibration, Poisson batches, clipping and noise.

The pieces are Opacus' own, put together as ``PrivacyEngine.make_private`` does, with one
difference: the accountant is the site's ledger (its history across all rounds), not a
fresh one. The ``GradSampleModule`` wraps the whole :class:`AdaptedCLIP` composite, whose
only submodules are the trainable adapters; the sealed backbone is a plain attribute, so
gradients flow through it while only adapter parameters get per-sample gradients.

Per-sample gradients come from Opacus' layer formulas (hooks mode), also for fedgray's
subclasses of Opacus' layers (:mod:`fedgray.privacy.grad_samplers`).

Opacus is imported where DP-SGD starts, not with this module: it costs every process that
loads fedgray (the simulation's, each actor's) about a second, private or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from fedgray.config import ConfigError, PrivacyConfig
from fedgray.privacy.ledger import Ledger
from fedgray.privacy.randomness import check_owned_parameters, dp_generator
from fedgray.tasks.data import TaskData
from fedgray.tasks.objectives import Batch

if TYPE_CHECKING:
    from opacus import GradSampleModule
    from opacus.accountants import IAccountant
    from opacus.optimizers import DPOptimizer


@dataclass(frozen=True)
class NoisePlan:
    """One site's DP-SGD setting: noise multiplier and Poisson sample rate."""

    noise_multiplier: float
    sample_rate: float


def poisson_rate(batch_size: int, num_samples: int) -> float:
    """A site's Poisson sample rate: its expected batch over its samples (1: every example
    in every step)."""
    return min(1.0, batch_size / num_samples)


def plan_noise(
    privacy: PrivacyConfig,
    *,
    num_samples: int,
    batch_size: int,
    total_steps: int,
    ledger: Ledger | None = None,
    remaining_steps: int | None = None,
) -> NoisePlan:
    """The configured noise multiplier, or the one reaching ``target_epsilon`` after
    ``total_steps`` steps (the whole planned run) at ``delta`` with the configured accountant.

    With the site's ``ledger`` and the ``remaining_steps`` it may still take, a target holds
    across changes of plan: while the history is the plan's own (its noise, at most its
    steps), the plan's noise is kept, so an uninterrupted and a resumed run draw the same
    noise; otherwise (rounds added on resume, a new target) the remaining steps get the
    smallest noise that keeps the whole history within the target.
    """
    sample_rate = poisson_rate(batch_size, num_samples)
    if privacy.noise_multiplier is not None:
        return NoisePlan(privacy.noise_multiplier, sample_rate)
    assert privacy.target_epsilon is not None  # by PrivacyConfig: one of the two is set
    sigma = calibrated_noise(
        privacy.target_epsilon, privacy.delta, sample_rate, total_steps, privacy.accountant
    )
    if ledger is None or remaining_steps is None or not ledger.history:
        return NoisePlan(sigma, sample_rate)
    own = all(n == sigma and q == sample_rate for n, q, _ in ledger.history)
    if own and ledger.steps + remaining_steps <= total_steps:
        return NoisePlan(sigma, sample_rate)
    rest = noise_for_rest(
        ledger,
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate,
        steps=remaining_steps,
    )
    return NoisePlan(rest, sample_rate)


TOLERANCE = 0.01  # relative: the noise found is at most 1% above the smallest that holds


class TargetUnreachable(ValueError):
    """The epsilon already spent leaves no room for more steps under the target."""


@lru_cache(maxsize=64)
def noise_for_rest(
    ledger: Ledger, *, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The smallest noise multiplier (within :data:`TOLERANCE`) with which ``steps`` more steps keep
    ``ledger``'s total epsilon at or below ``target_epsilon``; bisection on the accountant."""
    spent = ledger.epsilon(delta)
    if spent >= target_epsilon:
        raise TargetUnreachable(
            f"privacy.target_epsilon: {spent:.4f} of {target_epsilon:g} already spent "
            f"(delta {delta:g}); no noise keeps the target over {steps} more steps"
        )

    def epsilon(sigma: float) -> float:
        return ledger.with_entry(sigma, sample_rate, steps).epsilon(delta)

    # A run already recalibrated keeps its noise while that still uses the budget left
    # (within the tolerance): one accountant evaluation instead of a bisection per round.
    last, last_rate, _ = ledger.history[-1]
    if last_rate == sample_rate and (1 - TOLERANCE) * target_epsilon <= epsilon(last) <= (
        target_epsilon
    ):
        return last
    low, high = 0.0, 1.0
    while epsilon(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise TargetUnreachable(
                f"privacy.target_epsilon: {spent:.4f} of {target_epsilon:g} already spent "
                f"(delta {delta:g}); the rest is too small for {steps} more steps"
            )
    while high - low > TOLERANCE * high:
        middle = (low + high) / 2
        low, high = (low, middle) if epsilon(middle) <= target_epsilon else (middle, high)
    return high


@lru_cache(maxsize=64)
def calibrated_noise(
    epsilon: float, delta: float, sample_rate: float, steps: int, kind: str
) -> float:
    """The noise multiplier with which ``steps`` steps at ``sample_rate`` spend ``epsilon`` at
    ``delta`` (accountant ``kind``): Opacus' calibration, once per process for each setting
    (every site, every round asks; the binary search over accountant evaluations takes
    seconds)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=kind,
        )
    )


def poisson_batches(
    data: TaskData, *, sample_rate: float, seed: int, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Endless Poisson-sampled batches: each sample joins each batch with ``sample_rate``
    (drawn from ``generator``, by default a torch generator seeded with ``seed``)."""
    from opacus.data_loader import DPDataLoader

    loader = DPDataLoader(
        data.as_dataset(),
        sample_rate=sample_rate,
        generator=generator if generator is not None else torch.Generator().manual_seed(seed),
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
    secure_mode: bool = False,
) -> PrivateTraining:
    """Wrap ``model``/``optimizer`` for DP-SGD; every optimizer step is added to ``ledger``.

    The loss must be the mean of per-sample losses over the (Poisson) batch; the noisy sum
    of clipped per-sample gradients is divided by the expected batch size. Like Opacus'
    ``make_private``, it refuses optimiser parameters outside ``model`` and warns when the
    randomness is not cryptographically secure (see :mod:`fedgray.privacy.randomness`).
    """
    from opacus.optimizers import DPOptimizer
    from opacus.validators import ModuleValidator

    from fedgray.privacy.grad_samplers import AdapterGradSampleModule

    check_owned_parameters(model, optimizer)
    if secure_mode and any(p.device.type != "cpu" for p in model.parameters()):
        raise ConfigError(
            "privacy.secure_mode: torchcsprng's generator draws on the CPU; "
            "set train.device: cpu for secure noise"
        )
    generator = dp_generator(secure_mode)
    ModuleValidator.validate(model, strict=True)
    module = AdapterGradSampleModule(model, batch_first=True, loss_reduction="mean")
    expected = max(1, round(plan.sample_rate * len(data)))
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected,
        loss_reduction="mean",
        generator=generator,
        secure_mode=secure_mode,
    )
    accountant = ledger.make_accountant()
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
    stream = poisson_batches(data, sample_rate=plan.sample_rate, seed=seed, generator=generator)
    return PrivateTraining(module, dp_optimizer, stream, accountant, ledger.accountant)
