"""``fedgray audit``: an empirical lower bound on a site's epsilon beside its accountant's.

The one-run audit of Steinke, Nasr and Jagielski (NeurIPS 2023) at one site: canaries
(:mod:`fedgray.privacy.canaries`) each join the site's training data with probability 1/2,
the site trains exactly as ``fedgray adapt`` trains it (the one local trainer, DP-SGD,
``train.steps`` steps), each canary is scored by how much training lowered its loss, and a
guesser that names the highest scores members and the lowest non-members turns its right
guesses into a lower bound on epsilon at the run's delta (:mod:`fedgray.privacy.audit_bound`).
A correct DP-SGD can exceed its accountant's epsilon only with probability ``1 -
confidence``; a bound above it says the implementation leaks more than it accounts for.

Canaries stay at the site: the audited adapters are not saved (only the audit's record),
and the reported utility is measured on the test split, which holds none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fedgray.adapt import seed_everything
from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.privacy.audit_bound import epsilon_lower_bound
from fedgray.privacy.canaries import (
    CANARY_KINDS,
    draw_members,
    feature_canaries,
    guess,
    input_canaries,
    joined,
    per_sample_losses,
    selected,
)
from fedgray.privacy.features import backbone_features
from fedgray.runs import RunFolder
from fedgray.site import load_task_data, open_backbone
from fedgray.tasks import TaskData, evaluate
from fedgray.train.schedule import Schedule
from fedgray.train.trainer import LocalTrainer


@dataclass(frozen=True)
class AuditOptions:
    """How the audit is run: ``canaries`` inserted, ``guesses`` made (half "member" on the
    highest scores, half "non-member" on the lowest), the bound's ``confidence``, and the
    ``seed`` of the canaries and of their draw (independent of the training's seeds), and
    the ``canary`` kind (:data:`~fedgray.privacy.canaries.CANARY_KINDS`; default: ``feature``
    where DP-SGD steps over cached features, else ``input``)."""

    canaries: int = 1000
    guesses: int = 100
    confidence: float = 0.95
    seed: int = 0
    canary: str | None = None

    def __post_init__(self) -> None:
        if self.canary is not None and self.canary not in CANARY_KINDS:
            raise ConfigError(f"--canary: '{self.canary}' (known: {', '.join(CANARY_KINDS)})")
        if self.canaries < 1:
            raise ConfigError(f"--canaries: must be >= 1 (got {self.canaries})")
        if not 1 <= self.guesses <= self.canaries:
            raise ConfigError(
                f"--guesses: must be in [1, --canaries ({self.canaries})] (got {self.guesses})"
            )
        if not 0 < self.confidence < 1:
            raise ConfigError(f"--confidence: must be in (0, 1) (got {self.confidence})")


@dataclass(frozen=True)
class AuditResult:
    """What the audit found: the empirical lower bound and the accountant's epsilon (both
    at ``delta``), the guesses behind the bound, and the audited model's test metrics."""

    lower_bound: float
    epsilon: float
    delta: float
    confidence: float
    canaries: int
    members: int
    guesses: int
    correct: int
    utility: dict[str, float]
    run_dir: Path

    @property
    def passed(self) -> bool:
        """Whether the bound stays within the accountant's epsilon."""
        return self.lower_bound <= self.epsilon


class AuditFailed(RuntimeError):
    """The empirical lower bound exceeds the accountant's epsilon."""


def _drawn(
    kind: str, model: AdaptedCLIP, train: TaskData, options: AuditOptions
) -> tuple[TaskData, torch.Tensor, TaskData, TaskData | None]:
    """The canaries, which of them are members, the training data and the rows given as
    features: feature canaries are drawn in the space DP-SGD steps over (the backbone's
    features, cached once per process) and joined there; input canaries are taken from
    ``train`` and the members joined to the rest."""
    generator = torch.Generator().manual_seed(options.seed)
    members = draw_members(options.canaries, generator=generator)
    if kind == "feature":
        space = replace(train, images=backbone_features(model, train.images))
        canaries, _ = feature_canaries(space, count=options.canaries, generator=generator)
        return canaries, members, train, selected(canaries, members)
    canaries, rest = input_canaries(train, count=options.canaries, generator=generator)
    return canaries, members, joined(rest, selected(canaries, members)), None


def audit(
    config: Config,
    *,
    options: AuditOptions | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> AuditResult:
    """Audit ``config``'s DP-SGD at one site and write the audit's run folder."""
    options = options or AuditOptions()
    privacy = config.privacy
    if not privacy.enabled:
        raise ConfigError(
            "privacy.enabled: the audit bounds a DP-SGD run's epsilon; enable DP-SGD to audit it"
        )
    named = Path(config.output.root) / config.output.name if config.output.name else None
    if named is not None and (named / "audit.json").is_file():
        raise ValueError(f"{named} already holds an audit: choose another output.name")
    kind = options.canary or ("feature" if privacy.cache_features else "input")
    if kind == "feature" and not privacy.cache_features:
        raise ConfigError(
            "--canary: feature canaries need DP-SGD on cached features (privacy.cache_features)"
        )
    seed_everything(config)
    backbone = open_backbone(config, progress=progress)
    train = load_task_data(config, backbone, split="train")
    test = load_task_data(config, backbone, split="test")
    model = build_model(backbone, config.method)
    canaries, members, trained, rows = _drawn(kind, model, train, options)
    trainer = LocalTrainer(  # refuses a budget or setting before any folder is written
        config,
        model,
        trained,
        schedule=Schedule.single_site(config),
        seed=config.train.seed,
        who="fedgray audit",
        feature_rows=rows,
    )
    run = RunFolder(config.output.root, config.output.name, prefix="audit")
    run.save_config(config)
    started = time.perf_counter()
    scored = trainer.stepped if kind == "feature" else model  # what reads the canaries
    scale = backbone.interface.logit_scale  # the task applies privacy.loss_scale itself
    before = per_sample_losses(scored, trainer.task, canaries, scale=scale)
    echo(
        f"audit of {config.method.name} on {config.data.dataset}: {len(trainer.data)} training "
        f"rows, {int(members.sum())} of them {kind} canaries (of {options.canaries}); "
        f"{config.train.steps} DP-SGD steps"
    )
    trainer.run(progress=progress, description="audited training")
    report = trainer.close()
    assert report is not None  # privacy.enabled
    scores = before - per_sample_losses(scored, trainer.task, canaries, scale=scale)
    guessed_in = options.guesses // 2
    guesses = guess(scores, guesses_in=guessed_in, guesses_out=options.guesses - guessed_in)
    right = ((guesses == 1) & members) | ((guesses == -1) & ~members)
    correct = int(right.sum())
    bound = epsilon_lower_bound(
        canaries=options.canaries,
        guesses=options.guesses,
        correct=correct,
        delta=privacy.delta,
        confidence=options.confidence,
    )
    result = AuditResult(
        lower_bound=bound,
        epsilon=report.epsilon,
        delta=privacy.delta,
        confidence=options.confidence,
        canaries=options.canaries,
        members=int(members.sum()),
        guesses=options.guesses,
        correct=correct,
        utility=evaluate(model, test),
        run_dir=run.path,
    )
    run.write_json(
        "audit.json",
        {
            "lower_bound": bound,
            "epsilon": report.epsilon,
            "delta": privacy.delta,
            "confidence": options.confidence,
            "passed": result.passed,
            "canaries": options.canaries,
            "guesses": options.guesses,
            "correct": correct,
            "seed": options.seed,
            "seconds": time.perf_counter() - started,
            "privacy": report.metrics(),
            "utility": result.utility,
            "members": members.tolist(),
            "scores": scores.tolist(),
        },
    )
    return result


def check(result: AuditResult) -> AuditResult:
    """``result``, unless its bound exceeds the accountant's epsilon (:class:`AuditFailed`)."""
    if not result.passed:
        raise AuditFailed(
            f"audit: empirical epsilon lower bound {result.lower_bound:.3f} exceeds the "
            f"accountant's epsilon {result.epsilon:.3f} (delta {result.delta:g}, confidence "
            f"{result.confidence:g}): DP-SGD leaks more than it accounts for ({result.run_dir})"
        )
    return result
