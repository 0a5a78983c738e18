"""Typed run configuration, loaded from YAML with defaults and ``key=value`` overrides."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedgray.config_schema import (
    ConfigError,
    build,
    check,
    coerce,
    cut,
    one_of,
    positive,
    random_seed,
    registered,
    set_dotted,
    shown,
    to_dict,
)
from fedgray.config_secure import (
    CentralPrivacyConfig,
    SecureAggregationConfig,
    check_secure_and_central,
)
from fedgray.config_yaml import parse_yaml, read_yaml

# Registry-backed names are checked against the registries themselves, looked up when a
# config is built (the registries' modules import this one, so not at import time).


# The defaults of backbone.sample_budget and backbone.gradient_budget, and of `fedgray
# runtime serve`'s: about 4x what the largest shipped config spends in one process, all of
# its sites and its evaluation together; docs/security.md derives them from the extraction
# table.
DEFAULT_SAMPLE_BUDGET = 1_000_000
DEFAULT_GRADIENT_BUDGET = 500_000


def _access_levels() -> list[str]:
    from fedgray.backbone.access import AccessLevel

    return [level.value for level in AccessLevel]


def _datasets() -> Collection[str]:
    from fedgray.data.registry import DATASETS

    return DATASETS


def _methods() -> Collection[str]:
    from fedgray.adapters.methods import METHODS

    return METHODS


def _tasks() -> Collection[str]:
    from fedgray.tasks.objectives import TASKS

    return TASKS


def _schedules() -> Collection[str]:
    from fedgray.train.schedule import SHAPES

    return SHAPES


def _optimizers() -> Collection[str]:
    from fedgray.train.optimizers import OPTIMIZERS

    return OPTIMIZERS


def _projections() -> Collection[str]:
    from fedgray.adapters.prompt import PROJECTIONS

    return PROJECTIONS


def _partitioners() -> Collection[str]:
    from fedgray.data.partition import PARTITIONERS

    return PARTITIONERS


def _compressions() -> Collection[str]:
    from fedgray.fl.common.compression import COMPRESSIONS

    return COMPRESSIONS


def _selections() -> Collection[str]:
    from fedgray.fl.serverapp.selection import SELECTIONS

    return SELECTIONS


def _select_on() -> Collection[str]:
    from fedgray.fl.serverapp.selection import SELECTION_SPLITS

    return SELECTION_SPLITS


def _strategies() -> Collection[str]:
    from strategies.registry import STRATEGIES

    return STRATEGIES


def _objectives() -> Collection[str]:
    from fedgray.privacy.objectives import OBJECTIVES

    return OBJECTIVES


def _devices() -> Collection[str]:
    from fedgray.devices import DEVICES

    return DEVICES


def _precisions() -> Collection[str]:
    from fedgray.devices import PRECISIONS

    return PRECISIONS


def _accountants() -> Collection[str]:
    from fedgray.privacy.ledger import ACCOUNTANTS

    return ACCOUNTANTS


@dataclass
class BackboneConfig:
    """Which backbone to load and at which access level.

    With ``artifact`` set, the backbone comes from that sealed artifact (``pretrained`` is
    not used); it needs ``verify_key`` and ``content_key``. The three paths are made
    absolute here, so that processes with another working directory (Ray actors) find them.
    ``isolated`` runs the artifact in its own process (the isolated runtime). ``runtime``
    is the Unix socket of a runtime served by ``fedgray runtime serve`` (no artifact or keys
    in the site's process then). ``min_version`` (the lowest owner version of the artifact
    the site accepts) and ``revocations`` (the owner's signed revocation list) refuse a
    replayed older artifact; a served runtime takes them as options instead.
    ``query_budget``: encoder calls the site may make, at every level (None: unlimited);
    ``sample_budget``: samples it may send through the backbone, ``gradient_budget``:
    samples whose input gradients it may take back, below ``white`` (None: unlimited): the
    bound on extraction by queries (docs/security.md derives the defaults). In a
    simulation the sites one process serves share its backbone, and so its budget. A
    served runtime takes them as ``--query-budget``, ``--sample-budget`` and
    ``--gradient-budget`` and enforces them on its side.
    """

    name: str = "fedgray-tiny"
    pretrained: str | None = "fedgray-world"
    level: str = field(default="gray", metadata=registered("access level", _access_levels))
    query_budget: int | None = field(default=None, metadata=positive())
    sample_budget: int | None = field(default=DEFAULT_SAMPLE_BUDGET, metadata=positive())
    gradient_budget: int | None = field(default=DEFAULT_GRADIENT_BUDGET, metadata=positive())
    artifact: str | None = None
    verify_key: str | None = None
    content_key: str | None = None
    isolated: bool = False
    runtime: str | None = None
    min_version: int | None = field(default=None, metadata=positive())
    revocations: str | None = None

    def __post_init__(self) -> None:
        if self.runtime is not None and (self.artifact is not None or self.isolated):
            raise ConfigError(
                "backbone.runtime: a served runtime replaces backbone.artifact and "
                "backbone.isolated"
            )
        for key in ("min_version", "revocations"):
            if getattr(self, key) is not None and self.artifact is None:
                raise ConfigError(f"backbone.{key}: applies to backbone.artifact, which is unset")
        if self.isolated and self.artifact is None:
            raise ConfigError("backbone.isolated: the isolated runtime needs backbone.artifact")
        if self.artifact is not None and (self.verify_key is None or self.content_key is None):
            raise ConfigError(
                "backbone.artifact: a sealed artifact needs backbone.verify_key and "
                "backbone.content_key"
            )
        for key in ("artifact", "verify_key", "content_key", "runtime", "revocations"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, os.path.abspath(os.path.expanduser(value)))


@dataclass
class PretrainConfig:
    """The model owner's pretraining of the built-in tiny CLIP on the source domain."""

    steps: int = field(default=500, metadata=positive())
    batch_size: int = field(default=256, metadata=positive())
    lr: float = field(default=5e-4, metadata=positive())
    warmup_steps: int = field(default=50, metadata=check(lambda v: v >= 0, "must be >= 0"))
    train_size: int = field(default=40_000, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())


@dataclass
class DataConfig:
    """The site's dataset and the sizes of its three splits.

    ``validation_size``: samples of the validation split (cut from the training pool,
    disjoint from every site's data and from test) that the server scores to choose among
    rounds with ``federation.select_on: validation``. ``root``: where ``fashion-mnist`` and
    ``animal-mnist`` look for their files before the places their packages install them
    (made absolute here).
    """

    dataset: str = field(default="world/sketch", metadata=registered("dataset", _datasets))
    train_size: int = field(default=2000, metadata=positive())
    validation_size: int = field(default=1000, metadata=positive())
    test_size: int = field(default=1000, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())
    root: str | None = None

    def __post_init__(self) -> None:
        if self.root is not None:
            self.root = os.path.abspath(os.path.expanduser(self.root))


@dataclass
class CraftConfig:
    """CraFT (method ``craft``, black-box): CMA-ES over the prompt plus a refinement MLP.

    ``queries``: backbone calls the training may spend (the paper's 8,000), counted by the
    sealed backbone; ``popsize``/``sigma``: CMA-ES's population and initial step size;
    ``intrinsic_dim``: dimension of the searched point ``z``; ``projection``: how the fixed
    map ``A`` from ``z`` to the prompt is drawn (``normal``: N(0, 1/dim); ``uniform``: the
    authors' code, U(-1/sqrt(dim), 1/sqrt(dim)), 1/sqrt(3) of that spread); ``bound``:
    CMA-ES keeps each coordinate of ``z`` in ``[-bound, bound]`` (0: unbounded);
    ``consistency``: weight of the prediction-consistency term; ``consistency_until``: the
    share of a run's generations whose refiner loss has it (the fitness keeps it
    throughout, as the authors' code does); ``augment``: the refiner's epoch each
    generation sees freshly cropped and flipped training images (their features cost
    queries); ``hidden``: the refinement MLP's width; ``eval_every``: generations between
    test evaluations (free: no extra queries); ``context``: the words whose token
    embeddings start the prompt (the paper's "a photo of a"), written before every class
    prompt; ``validation``: the share of the training data held out to choose the
    generation returned (the start included; 0: the last generation, as the authors' code;
    ``fedgray adapt`` only: a federated site returns its last generation, and
    ``federation.select: best`` keeps the best round). The refinement MLP trains with
    ``train.lr`` and ``train.batch_size``.
    """

    queries: int = field(default=8000, metadata=positive())
    popsize: int = field(default=40, metadata=check(lambda v: v >= 2, "must be >= 2"))
    sigma: float = field(default=0.05, metadata=positive())
    intrinsic_dim: int = field(default=64, metadata=positive())
    projection: str = field(default="normal", metadata=registered("projection", _projections))
    bound: float = field(default=5.0, metadata=check(lambda v: v >= 0, "must be >= 0"))
    consistency: float = field(default=0.01, metadata=check(lambda v: v >= 0, "must be >= 0"))
    consistency_until: float = field(
        default=0.25, metadata=check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
    )
    augment: bool = True
    hidden: int = field(default=256, metadata=positive())
    eval_every: int = field(default=10, metadata=positive())
    context: str = field(
        default="a photo of a", metadata=check(lambda v: bool(v.strip()), "must name words")
    )
    validation: float = field(
        default=0.2, metadata=check(lambda v: 0 <= v < 1, "must be in [0, 1)")
    )


@dataclass
class MethodConfig:
    """What is trained: see ``fedgray.adapters.METHODS``.

    ``prompt_tokens``: LGA's tokens per layer; ``lora_rank``/``lora_alpha``: LoRA's rank and
    scale (``alpha / rank``); ``lora_train_a``: train LoRA's ``A`` factor too (Hu et al.;
    federated, FedAvg of both factors is then not the mean of the updates), by default
    FFA-LoRA: ``A`` frozen at a fixed random draw, only ``B`` trained and sent;
    ``output_rank``: the rank of ``output-lowrank``'s adapters; ``last_layers``: blocks per
    tower that ``last-layers`` trains; ``whiten``: a public image dataset whose backbone
    features precondition the image output adapter (methods with a linear one: ``output``,
    ``dga``, ``lga``, ``linear-probe``; see :mod:`fedgray.adapters.whitening`), none by default;
    ``text_subspace``: with ``whiten``, confine that adapter's correction to the leading
    directions of the public dataset's caption features (this many);
    ``craft``: CraFT's settings.
    """

    name: str = field(default="dga", metadata=registered("method", _methods))
    prompt_tokens: int = field(default=2, metadata=positive())
    input_lr_scale: float = field(default=1.0, metadata=positive())
    lora_rank: int = field(default=4, metadata=positive())
    lora_alpha: float = field(default=8.0, metadata=positive())
    lora_train_a: bool = False
    output_rank: int = field(default=8, metadata=positive())
    last_layers: int = field(default=1, metadata=positive())
    whiten: str | None = field(default=None, metadata=registered("dataset", _datasets))
    text_subspace: int | None = field(default=None, metadata=positive())
    craft: CraftConfig = field(default_factory=CraftConfig)


@dataclass
class TrainConfig:
    """Local optimisation, the same in ``fedgray adapt`` and at every federated site.

    ``optimizer``: ``adamw`` (the default) or ``sgd`` (momentum 0.9), see
    :mod:`fedgray.train.optimizers`. ``lr``: the learning rate of that optimizer, the same
    in both: with ``schedule: cosine`` (the default) the peak of a cosine decay over one
    local training call (``train.steps`` steps in ``fedgray adapt``,
    ``federation.local_steps`` per round at a site, restarting each round); with
    ``run-cosine`` the peak of one decay over a site's whole run (all rounds); with
    ``constant`` the rate of every step (see :mod:`fedgray.train.schedule`). ``steps`` and
    ``eval_every`` apply to ``fedgray adapt``. ``device`` (``auto``, ``cpu``, ``cuda``) is
    where the backbone, the adapters and the data live; ``precision`` (``auto``,
    ``float32``, ``bfloat16``) the autocast of forward passes (see :mod:`fedgray.devices`).
    """

    task: str = field(default="retrieval", metadata=registered("task", _tasks))
    steps: int = field(default=600, metadata=positive())
    batch_size: int = field(default=64, metadata=positive())
    lr: float = field(default=3e-3, metadata=positive())
    schedule: str = field(default="cosine", metadata=registered("schedule", _schedules))
    optimizer: str = field(default="adamw", metadata=registered("optimizer", _optimizers))
    weight_decay: float = field(default=0.0, metadata=check(lambda v: v >= 0, "must be >= 0"))
    eval_every: int = field(default=100, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())
    threads: int | None = field(default=None, metadata=positive())
    device: str = field(default="auto", metadata=registered("device", _devices))
    precision: str = field(default="auto", metadata=registered("precision", _precisions))


def _folder_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and os.sep not in name


def _trackers() -> Collection[str]:
    from fedgray.tracking import TRACKERS

    return TRACKERS


@dataclass
class OutputConfig:
    """Where a run writes its folder, ``root/name``, a folder directly inside ``root`` (a
    name with a separator or ``..`` would put it elsewhere), and the tracking sinks that also
    receive its metrics (``track``: ``tensorboard``, ``mlflow``; see :mod:`fedgray.tracking`)."""

    root: str = "runs"
    name: str | None = field(
        default=None,
        metadata=check(_folder_name, "must be one folder name (no '/', not '.' or '..')"),
    )
    track: list[str] = field(default_factory=list, metadata=registered("tracking sink", _trackers))

    def __post_init__(self) -> None:
        from fedgray.tracking import check_installed

        check_installed(self.track)


def _strategy_options(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the options strategy ``strategy``'s constructor takes
    (names and types), so that a wrong one is refused before a run starts."""
    from strategies.registry import strategy_options

    known = strategy_options(strategy)
    checked = {}
    for key, value in options.items():
        where = f"federation.strategy_options.{cut(str(key))}"
        if key not in known:
            choices = ", ".join(known) or "none"
            raise ConfigError(f"{where}: not an option of {strategy} (its options: {choices})")
        checked[key] = coerce(value, known[key], where)
    return checked


@dataclass
class FederationConfig:
    """The federated run: sites, rounds, partitioning, strategy and what stays local.

    ``compression: int8`` sends int8 updates up (error feedback at the site) and the
    global adapters down as float16 (see :mod:`fedgray.fl.common.compression`).
    ``select``: the adapters the run ends with, ``last`` (the last round's) or ``best``
    (the round, 0 included, with the best value of the task's metric on ``select_on``:
    ``sites``, the sites' held-out data, which needs ``fraction_evaluate > 0``, or
    ``validation``, the server's validation split; see
    :mod:`fedgray.fl.serverapp.selection`). Selecting on the test split is refused: the
    figure a run reports would then be the maximum over rounds of noisy test scores.
    ``central_eval``: the server scores every round on its validation split
    (``data.validation_size``) and, once after the last round, the final and the initial
    adapters on its test split, the run's reported figures.
    """

    num_sites: int = field(default=8, metadata=positive())
    num_rounds: int = field(default=5, metadata=positive())
    local_steps: int = field(default=20, metadata=positive())
    partitioner: str = field(default="iid", metadata=registered("partitioner", _partitioners))
    alpha: float = field(default=0.5, metadata=positive())
    domains: list[str] = field(default_factory=list, metadata=registered("dataset", _datasets))
    holdout: float = field(default=0.2, metadata=check(lambda v: 0 < v < 1, "must be in (0, 1)"))
    strategy: str = field(default="fedavg", metadata=registered("strategy", _strategies))
    strategy_options: dict[str, Any] = field(default_factory=dict)
    personal: list[str] = field(default_factory=list)
    fraction_train: float = field(default=1.0, metadata=check(lambda v: 0 < v <= 1, "in (0, 1]"))
    fraction_evaluate: float = field(
        default=1.0, metadata=check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
    )
    central_eval: bool = True
    actors: int = field(default=1, metadata=positive())
    round_timeout: float = field(default=600.0, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())
    compression: str = field(default="none", metadata=registered("compression", _compressions))
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    select: str = field(default="last", metadata=registered("selection", _selections))
    select_on: str = "sites"  # checked in __post_init__, so that 'test' gets its own reason

    def __post_init__(self) -> None:
        if self.strategy_options:  # (none: no need to import Flower's strategies)
            self.strategy_options = _strategy_options(self.strategy, self.strategy_options)
        if self.select_on == "test":
            raise ConfigError(
                "federation.select_on: 'test' would choose the adapters on the split that "
                "reports them; choose on 'validation' (or 'sites')"
            )
        if self.select_on not in _select_on():
            raise ConfigError(
                f"federation.select_on: unknown selection split {self.select_on!r} "
                f"(known: {', '.join(_select_on())})"
            )
        if self.select == "best" and self.select_on == "sites" and not self.fraction_evaluate:
            raise ConfigError(
                "federation.select: 'best' chooses by the sites' held-out metric, which "
                "federation.fraction_evaluate: 0 never measures"
            )


@dataclass
class PrivacyConfig:
    """Sample-level DP-SGD at each site (Opacus) and its accounting across rounds.

    Noise: ``noise_multiplier``, or ``target_epsilon`` for the whole planned run (all
    ``federation.num_rounds * federation.local_steps`` steps, at ``delta``). A site whose
    next round would take its epsilon above ``epsilon_budget`` does not train; with
    ``on_budget: stop`` the run then stops. ``central``: site-level DP on the aggregate
    (independent of ``enabled``; see :class:`~fedgray.config_secure.CentralPrivacyConfig`).
    ``secure_mode``: Opacus' secure mode, noise and sampling from a cryptographically secure
    generator (needs ``torchcsprng``); off, they come from torch's seeded generators, which
    repeat a run exactly but are not secure (see :mod:`fedgray.privacy.randomness`).
    ``cache_features``: when only the image output module trains (method ``output`` and its
    smaller forms), compute the backbone's image features once per local training call and
    step DP-SGD over them (same per-sample gradients and accounting, far cheaper steps, so
    full batches and many steps are affordable; see :mod:`fedgray.privacy.features`).
    ``objective``: the per-sample retrieval objective (:mod:`fedgray.privacy.objectives`):
    ``frozen-text``, each image against its caption and public negatives with the whole
    text side frozen; ``text-out``, the same with the text output module trained too.
    ``loss_scale``: the logit scale of that per-sample loss (default: the backbone's).
    ``audit``: a federated run audits site 0's DP-SGD as ``fedgray audit`` does
    (:mod:`fedgray.privacy.planted`): ``audit_canaries`` canaries planted in its training
    data, ``audit_guesses`` guesses after its last round, the empirical lower bound (95%
    confidence) beside its epsilon; the run fails when the bound exceeds it.
    """

    enabled: bool = False
    noise_multiplier: float | None = field(
        default=None, metadata=check(lambda v: v >= 0, "must be >= 0")
    )
    target_epsilon: float | None = field(default=None, metadata=positive())
    max_grad_norm: float = field(default=1.0, metadata=positive())
    delta: float = field(default=1e-5, metadata=check(lambda v: 0 < v < 1, "in (0, 1)"))
    accountant: str = field(default="rdp", metadata=registered("accountant", _accountants))
    epsilon_budget: float | None = field(default=None, metadata=positive())
    on_budget: str = field(default="skip", metadata=one_of("skip", "stop"))
    poisson: bool = True
    secure_mode: bool = False
    cache_features: bool = False
    objective: str = field(default="frozen-text", metadata=registered("objective", _objectives))
    loss_scale: float | None = field(default=None, metadata=positive())
    audit: bool = False
    audit_canaries: int = field(default=1000, metadata=positive())
    audit_guesses: int = field(default=100, metadata=positive())
    central: CentralPrivacyConfig = field(default_factory=CentralPrivacyConfig)

    def __post_init__(self) -> None:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "privacy: give exactly one of privacy.noise_multiplier and privacy.target_epsilon"
            )
        if self.audit and not self.enabled:
            raise ConfigError(
                "privacy.audit: the audit bounds DP-SGD's epsilon; set privacy.enabled: true"
            )
        if self.audit_guesses > self.audit_canaries:
            raise ConfigError(
                f"privacy.audit_guesses: must be at most privacy.audit_canaries "
                f"({self.audit_canaries}; got {self.audit_guesses})"
            )
        if self.enabled and not self.poisson:
            raise ConfigError(
                "privacy.poisson: false is not supported: the accountants' epsilon holds only "
                "for Poisson sampling"
            )


@dataclass
class Config:
    """A whole fedgray run."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        check_secure_and_central(self)
        if self.privacy.audit and self.federation.fraction_train < 1:
            raise ConfigError(
                "privacy.audit: the audited site must train in every round: set "
                f"federation.fraction_train: 1 (got {self.federation.fraction_train:g})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, as saved in a run folder."""
        return to_dict(self)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``'train.steps=100'`` into ``('train.steps', 100)`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{cut(text)}: an override must look like section.key=value")
    try:
        value = parse_yaml(raw, where=cut(key.strip()))
    except yaml.YAMLError as error:  # a MarkedYAMLError has a one-line problem, others do not
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{cut(key)}: cannot parse value {shown(raw)} ({problem})") from None
    return key.strip(), value


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build and validate a :class:`Config` from a dict plus ``key=value`` overrides."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        set_dotted(merged, *parse_override(text))
    return build(Config, merged)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(data, overrides)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
