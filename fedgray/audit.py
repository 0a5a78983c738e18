"""``fedgray audit``: an empirical lower bound on a site's epsilon beside its accountant's.

The one-run audit of Steinke, Nasr and Jagielski (NeurIPS 2023) at one site: canaries
(:mod:`fedgray.privacy.canaries`) each join the site's training data with probability 1/2,
the site trains exactly as ``fedgray adapt`` trains it (the one local trainer, DP-SGD,
``train.steps`` steps), each canary is scored by how much training lowered its loss, and a
guesser that names the highest scores members and the lowest non-members turns its right
guesses into a lower bound on epsilon at the run's delta (:mod:`fedgray.privacy.audit_bound`).
A correct DP-SGD can exceed its accountant's epsilon only with probability ``1 -
confidence``; a bound above it says the implementation leaks more than it accounts for.
The final adapters cannot show a sampler that shuffles instead of sampling Poisson (a
canary's total influence is about the same), so the audit also checks the batches the
run drew against the accountant's sample rate (:mod:`fedgray.privacy.sampling_check`).

Canaries stay at the site: the audited adapters are not saved (only the audit's record),
and the reported utility is measured on the test split, which holds none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedgray.adapt import seed_everything
from fedgray.adapters import build_model
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.materials import load_task_data, open_backbone
from fedgray.privacy.audit_bound import CONFIDENCE, epsilon_lower_bound, exceeded
from fedgray.privacy.canaries import CANARY_KINDS
from fedgray.privacy.planted import canary_kind, plant
from fedgray.privacy.sampling_check import BatchSizes, check_sampling
from fedgray.runs import RunFolder
from fedgray.tasks import evaluate
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
    confidence: float = CONFIDENCE
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
    at ``delta``), the guesses behind the bound, the audited model's test metrics, and the
    check of the batches drawn (:mod:`fedgray.privacy.sampling_check`: its p-value, and
    why it refutes Poisson sampling at the accountant's rate, or None)."""

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
    sampling_p_value: float = 1.0
    sampling: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the bound stays within the accountant's epsilon and the batches drawn
        are consistent with the accountant's Poisson sampling."""
        return self.lower_bound <= self.epsilon and self.sampling is None


class AuditFailed(RuntimeError):
    """The empirical lower bound exceeds the accountant's epsilon."""


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
    kind = canary_kind(privacy, options.canary)
    seed_everything(config.train)
    backbone = open_backbone(config, progress=progress)
    train = load_task_data(config.data, backbone, split="train")
    test = load_task_data(config.data, backbone, split="test")
    model = build_model(backbone, config.method)
    planted = plant(model, train, kind=kind, count=options.canaries, seed=options.seed)
    members = planted.members
    trainer = LocalTrainer(  # refuses a budget or setting before any folder is written
        config,
        model,
        planted.data,
        schedule=Schedule.single_site(config.train),
        seed=config.train.seed,
        who="fedgray audit",
        feature_rows=planted.rows,
    )
    drawn = trainer.stream = BatchSizes(trainer.stream)  # the sampler's output, checked
    run = RunFolder(config.output.root, config.output.name, prefix="audit")
    run.save_config(config)
    started = time.perf_counter()
    before = planted.losses(model, trainer.task)
    echo(
        f"audit of {config.method.name} on {config.data.dataset}: {len(trainer.data)} training "
        f"rows, {int(members.sum())} of them {kind} canaries (of {options.canaries}); "
        f"{config.train.steps} DP-SGD steps"
    )
    trainer.run(progress=progress, description="audited training")
    report = trainer.close()
    assert report is not None  # privacy.enabled
    scores = before - planted.losses(model, trainer.task)
    correct = planted.right_guesses(scores, guesses=options.guesses)
    rows, rate = len(trainer.data), report.plan.sample_rate
    bound = epsilon_lower_bound(
        canaries=options.canaries,
        guesses=options.guesses,
        correct=correct,
        delta=privacy.delta,
        confidence=options.confidence,
    )
    verdict = check_sampling(drawn.sizes, rows=rows, rate=rate)
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
        sampling_p_value=verdict.p_value,
        sampling=verdict.refuted,
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
            "sampling_p_value": result.sampling_p_value,
            "batch_sizes": drawn.sizes,
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
    """``result``, unless its bound exceeds the accountant's epsilon or its batches refute
    Poisson sampling at the accountant's rate (:class:`AuditFailed`, one line)."""
    if result.lower_bound > result.epsilon:
        line = exceeded(
            lower_bound=result.lower_bound,
            epsilon=result.epsilon,
            delta=result.delta,
            confidence=result.confidence,
        )
        raise AuditFailed(f"{line} ({result.run_dir})")
    if result.sampling is not None:
        raise AuditFailed(f"{result.sampling} ({result.run_dir})")
    return result
