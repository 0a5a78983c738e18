"""The run configuration's schema: its sections, their types, ranges and defaults.

This module sits at the bottom of the library: it imports nothing of fedgray but the
schema machinery (``config_schema``, ``config_yaml``), so that every room may read its
section. A field whose value names a registry entry (a dataset, a method, a strategy) says
which registry by its key (:func:`~fedgray.config_schema.registered`); the names are
checked by :mod:`fedgray.resolver`, which sits above the registries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

import yaml

from fedgray.config_schema import (
    ConfigError,
    build,
    check,
    cut,
    get_dotted,
    one_of,
    positive,
    random_seed,
    registered,
    sections,
    set_dotted,
    shown,
    to_dict,
)
from fedgray.config_yaml import parse_yaml, read_yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class MethodSection(Protocol):
    """A method's own options: a config dataclass named by its section key."""

    SECTION: ClassVar[str]


S = TypeVar("S", bound=MethodSection)

# The defaults of backbone.sample_budget and backbone.gradient_budget, and of `fedgray
# runtime serve`'s: about 4x what the largest shipped config spends in one process, all of
# its sites and its evaluation together; docs/security.md derives them from the extraction
# table.
DEFAULT_SAMPLE_BUDGET = 1_000_000
DEFAULT_GRADIENT_BUDGET = 500_000


@dataclass
class SecureAggregationConfig:
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) for the train phase.

    Each private key is split into ``num_shares`` shares (the site and its neighbours);
    ``reconstruction_threshold`` of them rebuild it, so a round survives sites that drop
    out as long as every survivor keeps that many live neighbours. Sites send the update
    (new minus global adapters) times ``weight / max_weight``, clipped to
    ``±clipping_range`` and quantized into ``quantization_range`` levels. Under
    ``privacy.central`` every weight is 1 and ``max_weight`` is taken as 1.
    """

    enabled: bool = False
    num_shares: int = field(default=3, metadata=check(lambda v: v > 2, "must be > 2"))
    reconstruction_threshold: int = field(
        default=2, metadata=check(lambda v: v >= 2, "must be >= 2")
    )
    clipping_range: float = field(default=8.0, metadata=positive())
    quantization_range: int = field(
        default=2**22, metadata=check(lambda v: 1 < v < 2**32, "must be in (1, 2**32)")
    )
    max_weight: float = field(default=1000.0, metadata=positive())

    def __post_init__(self) -> None:
        if self.reconstruction_threshold >= self.num_shares:
            raise ConfigError(
                "federation.secure_aggregation.reconstruction_threshold: must be less than "
                f"num_shares ({self.num_shares}), got {self.reconstruction_threshold}"
            )


@dataclass
class CentralPrivacyConfig:
    """Site-level DP: each site's update clipped to ``clipping_norm`` (L2, on the site), and
    Gaussian noise of standard deviation ``noise_multiplier * clipping_norm / m`` added to the
    mean of the ``m`` sampled sites' updates. Epsilon at ``delta`` comes from Opacus' RDP
    accountant over all rounds (see :mod:`fedgray.fl.common.central`)."""

    enabled: bool = False
    noise_multiplier: float = field(default=1.0, metadata=positive())
    clipping_norm: float = field(default=1.0, metadata=positive())
    delta: float = field(default=1e-3, metadata=check(lambda v: 0 < v < 1, "in (0, 1)"))


def min_trained_sites(num_sites: int, fraction_train: float) -> int:
    """The fewest sites a round trains: the rounded fraction, at least one, at most all
    (``strategies.build_strategy`` gives it to Flower as ``min_train_nodes``)."""
    return max(1, min(num_sites, round(num_sites * fraction_train)))


def sampled_sites(num_sites: int, fraction_train: float) -> int:
    """How many sites Flower's FedAvg asks to train each round: the larger of
    :func:`min_trained_sites` and the truncated fraction, as FedAvg samples."""
    return max(int(num_sites * fraction_train), min_trained_sites(num_sites, fraction_train))


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
    level: str = field(default="gray", metadata=registered("access level"))
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

    dataset: str = field(default="world/sketch", metadata=registered("dataset"))
    train_size: int = field(default=2000, metadata=positive())
    validation_size: int = field(default=1000, metadata=positive())
    test_size: int = field(default=1000, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())
    root: str | None = None

    def __post_init__(self) -> None:
        if self.root is not None:
            self.root = os.path.abspath(os.path.expanduser(self.root))


@dataclass
class MethodConfig:
    """What is trained: see ``fedgray.adapters.METHODS``. A method's own options are in its
    section (``method.lora.rank``), declared by the method's row with the module that reads
    it (the sections are listed below); the keys here apply to several methods.

    ``input_lr_scale``: the input adapters' learning rate as a multiple of ``train.lr``
    (methods with input adapters: ``dga``, ``lga``); ``whiten``: a public image dataset
    whose backbone features precondition the image output adapter (methods with a linear
    one: ``output``, ``dga``, ``lga``, ``linear-probe``; see
    :mod:`fedgray.adapters.whitening`), none by default; ``text_subspace``: with ``whiten``,
    confine that adapter's correction to the leading directions of the public dataset's
    caption features (this many).
    """

    name: str = field(default="dga", metadata=registered("method"))
    input_lr_scale: float = field(default=1.0, metadata=positive())
    whiten: str | None = field(default=None, metadata=registered("dataset"))
    text_subspace: int | None = field(default=None, metadata=positive())
    options: dict[str, Any] = field(default_factory=dict, metadata=sections("method section"))
    """The methods' sections by name: mappings as written, typed by the resolver."""

    def section(self, cls: type[S]) -> S:
        """This config's section ``cls.SECTION``, as ``cls`` (its defaults where the config
        sets none)."""
        given = self.options.get(cls.SECTION, {})
        if isinstance(given, cls):
            return given
        built = build(cast("type[DataclassInstance]", cls), given, where=f"method.{cls.SECTION}")
        return cast(S, built)


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

    task: str = field(default="retrieval", metadata=registered("task"))
    steps: int = field(default=600, metadata=positive())
    batch_size: int = field(default=64, metadata=positive())
    lr: float = field(default=3e-3, metadata=positive())
    schedule: str = field(default="cosine", metadata=registered("schedule"))
    optimizer: str = field(default="adamw", metadata=registered("optimizer"))
    weight_decay: float = field(default=0.0, metadata=check(lambda v: v >= 0, "must be >= 0"))
    eval_every: int = field(default=100, metadata=positive())
    seed: int = field(default=0, metadata=random_seed())
    threads: int | None = field(default=None, metadata=positive())
    device: str = field(default="auto", metadata=registered("device"))
    precision: str = field(default="auto", metadata=registered("precision"))


def _folder_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and os.sep not in name


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
    track: list[str] = field(default_factory=list, metadata=registered("tracking sink"))


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
    partitioner: str = field(default="iid", metadata=registered("partitioner"))
    alpha: float = field(default=0.5, metadata=positive())
    domains: list[str] = field(default_factory=list, metadata=registered("dataset"))
    holdout: float = field(default=0.2, metadata=check(lambda v: 0 < v < 1, "must be in (0, 1)"))
    strategy: str = field(default="fedavg", metadata=registered("strategy"))
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
    compression: str = field(default="none", metadata=registered("compression"))
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    select: str = field(default="last", metadata=registered("selection"))
    select_on: str = field(default="sites", metadata=registered("selection split"))

    def __post_init__(self) -> None:
        if self.select_on == "test":
            raise ConfigError(
                "federation.select_on: 'test' would choose the adapters on the split that "
                "reports them; choose on 'validation' (or 'sites')"
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
    (independent of ``enabled``; see :class:`CentralPrivacyConfig`).
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
    confidence) beside its epsilon, and the p-value of the batches it drew under Poisson
    sampling at the accountant's rate (:mod:`fedgray.privacy.sampling_check`); the run
    fails when the bound exceeds the epsilon or the batches refute that sampling.
    """

    enabled: bool = False
    noise_multiplier: float | None = field(
        default=None, metadata=check(lambda v: v >= 0, "must be >= 0")
    )
    target_epsilon: float | None = field(default=None, metadata=positive())
    max_grad_norm: float = field(default=1.0, metadata=positive())
    delta: float = field(default=1e-5, metadata=check(lambda v: 0 < v < 1, "in (0, 1)"))
    accountant: str = field(default="rdp", metadata=registered("accountant"))
    epsilon_budget: float | None = field(default=None, metadata=positive())
    on_budget: str = field(default="skip", metadata=one_of("skip", "stop"))
    poisson: bool = True
    secure_mode: bool = False
    cache_features: bool = False
    objective: str = field(default="frozen-text", metadata=registered("objective"))
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
        self._check_secure_and_central()
        if self.privacy.audit and self.federation.fraction_train < 1:
            raise ConfigError(
                "privacy.audit: the audited site must train in every round: set "
                f"federation.fraction_train: 1 (got {self.federation.fraction_train:g})"
            )

    def _check_secure_and_central(self) -> None:
        """Cross-section checks of SecAgg+ and central DP (those a strategy's flags decide
        are the resolver's, :func:`fedgray.resolver.resolve`)."""
        fed, central = self.federation, self.privacy.central
        secure = fed.secure_aggregation
        if secure.enabled:
            if fed.compression != "none":
                raise ConfigError(
                    "federation.compression: SecAgg+ quantises the sum itself; use one or the other"
                )
            sampled = sampled_sites(fed.num_sites, fed.fraction_train)
            if secure.num_shares > sampled:
                raise ConfigError(
                    f"federation.secure_aggregation.num_shares: at most the {sampled} sites "
                    f"sampled per round, got {secure.num_shares}"
                )
        if central.enabled:
            if fed.compression != "none":
                raise ConfigError(
                    "federation.compression: central DP bounds each update by clipping it; a "
                    "quantised update with error feedback can leave that bound"
                )
            if secure.enabled and secure.clipping_range < central.clipping_norm:
                raise ConfigError(
                    "federation.secure_aggregation.clipping_range: must be >= "
                    f"privacy.central.clipping_norm ({central.clipping_norm}) so that SecAgg+ "
                    f"never clips a clipped update, got {secure.clipping_range}"
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


MOVED_KEYS = {
    "method.prompt_tokens": "method.lga.prompt_tokens",
    "method.lora_rank": "method.lora.rank",
    "method.lora_alpha": "method.lora.alpha",
    "method.lora_train_a": "method.lora.train_a",
    "method.output_rank": "method.output_lowrank.rank",
    "method.last_layers": "method.last_layers.blocks",
}
"""Keys that moved into their method's own section: old key -> new key."""


def _refuse_moved(data: dict[str, Any]) -> None:
    """One line naming the new key for a key of :data:`MOVED_KEYS` given the old way (a
    plain value where a section now is)."""
    for old, new in MOVED_KEYS.items():
        section, _, key = old.rpartition(".")
        parent = get_dotted(data, section)
        if isinstance(parent, dict) and key in parent and not isinstance(parent[key], dict):
            raise ConfigError(f"{old}: moved to {new}")


def parse_config(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a dict plus ``key=value`` overrides, checking types,
    ranges and cross-field rules; the names it gives registries are checked by
    :func:`fedgray.resolver.resolve`, which every run goes through."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        set_dotted(merged, *parse_override(text))
    _refuse_moved(merged)
    return build(Config, merged)


def read_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config file (or the defaults when ``path`` is None) and apply overrides,
    as :func:`parse_config` does (names unchecked: :func:`fedgray.resolver.load_config`)."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_config(data, overrides)


def to_document(config: Config) -> str:
    """``config`` as one JSON document, whole and typed (lists, None and every section as
    they are): the form a config crosses a process boundary in (Flower's run config), read
    back to an equal Config by :func:`fedgray.resolver.resolve_document` (which types the
    method sections :func:`parse_document` leaves as mappings)."""
    return json.dumps(config.to_dict(), separators=(",", ":"))


def parse_document(text: str) -> Config:
    """The Config of a :func:`to_document` document, checked as a YAML config is (names:
    :func:`fedgray.resolver.resolve_document`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"document: not a config document ({error.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"document: expected a mapping of sections, got {shown(data)}")
    return parse_config(data)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
