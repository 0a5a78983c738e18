"""What a federated run checks before it starts: before a run folder exists or Ray starts.

Names are checked when the config loads; here come the checks that need the data's sizes,
the partitioner, the backbone and, for a resume, the run folder. Every failure is one line
naming the field (a :class:`~fedgray.config_schema.ConfigError`) or the file, and nothing
is written: a refused resume leaves its run folder byte for byte as it was.

The backbone and the adapters' initial state are built here too; in ``fedgray run`` the
server runs in this process, so that warms its caches rather than adding work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedgray.backbone.loading import BUILTIN_TAG
from fedgray.config import BackboneConfig, Config
from fedgray.config_schema import ConfigError, shown
from fedgray.data.registry import check_images
from fedgray.fl.common.partitions import partitions
from fedgray.fl.common.private import PrivacyLog
from fedgray.fl.common.records import from_record
from fedgray.fl.serverapp.checkpoint import Checkpoint, load_checkpoint
from fedgray.fl.serverapp.selection import scores_validation
from fedgray.fl.serverapp.server import initial_adapters
from fedgray.materials import check_classes, check_size
from fedgray.resolver import load_config

# Settings a checkpoint was made under and a resume cannot change: the sites' data and
# partitions, the model and what travels, the strategy's state, how epsilon is accounted,
# how the final round is chosen (a checkpoint of a ``last`` run holds no best round).
FIXED_ON_RESUME = (
    "backbone.",
    "method.",
    "data.",
    "train.task",
    "federation.num_sites",
    "federation.partitioner",
    "federation.alpha",
    "federation.domains",
    "federation.holdout",
    "federation.seed",
    "federation.strategy",
    "federation.personal",
    "federation.compression",
    "federation.select",
    "federation.secure_aggregation.",
    "privacy.enabled",
    "privacy.accountant",
    "privacy.delta",
    "privacy.max_grad_norm",
    "privacy.central.",
)
# The owner's recipe makes the backbone's weights where a run names the built-in backbone or
# random ones (``pretrain.seed`` seeds them); so it is fixed too, for such a run.
FIXED_RECIPE = "pretrain."
MIN_SITE_SAMPLES = 2  # one to train on, one held out for federated evaluation


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_data(config: Config) -> None:
    """The datasets hold the samples asked for, and the pool splits into every site's share."""
    fed, data = config.federation, config.data
    domains = tuple(fed.domains) or (data.dataset,)
    block = data.train_size // len(domains)
    for name in domains:
        check_size(name, "train", block, data)
    if fed.central_eval:
        check_size(data.dataset, "test", data.test_size, data)
    if scores_validation(config.federation):
        check_size(data.dataset, "validation", data.validation_size, data)
    check_classes(data.dataset)
    try:
        for name in domains:
            check_images(name, split="train")
        if fed.central_eval:
            check_images(data.dataset, split="test")
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"data.dataset: {error}") from None
    try:
        shares = partitions(config, fed.num_sites)
    except ValueError as error:
        raise ConfigError(f"federation.num_sites: {error}") from None
    sizes = [len(share) for share in shares]
    if min(sizes) < MIN_SITE_SAMPLES:
        site = sizes.index(min(sizes))
        raise ConfigError(
            f"federation.num_sites: site {site} would hold {sizes[site]} sample(s); each site "
            f"needs at least {MIN_SITE_SAMPLES} (one is held out for evaluation)"
        )


def _weights_from_recipe(spec: BackboneConfig) -> bool:
    from_files = spec.artifact is not None or spec.runtime is not None
    return not from_files and spec.pretrained in (None, BUILTIN_TAG)


def _changed(saved: Config, config: Config) -> None:
    before, after = _flat(saved.to_dict()), _flat(config.to_dict())
    fixed = FIXED_ON_RESUME + ((FIXED_RECIPE,) if _weights_from_recipe(saved.backbone) else ())
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key) and key.startswith(fixed):
            raise ConfigError(
                f"{key}: cannot change on resume (the run has {shown(before.get(key))}, asked "
                f"{shown(after.get(key))}); start a new run for that"
            )


def _privacy_left(config: Config, checkpoint: Checkpoint) -> str | None:
    """Refuse a target that the sites' spent epsilon already reaches; else say what is left."""
    privacy = config.privacy
    target = privacy.target_epsilon
    if not privacy.enabled or target is None or config.federation.num_rounds <= checkpoint.round:
        return None
    log = PrivacyLog(privacy)
    log.restore(checkpoint.privacy)  # the sites' ledgers, as the resumed server holds them
    spent = {site: ledger.epsilon(privacy.delta) for site, ledger in log.ledgers.items()}
    if not spent:
        return None
    site, most = max(spent.items(), key=lambda item: item[1])
    if most >= target:
        raise ConfigError(
            f"privacy.target_epsilon: site {site} has already spent epsilon {most:.4f} of "
            f"{target:g}; no further round keeps the target (raise it, or keep "
            f"federation.num_rounds at {checkpoint.round})"
        )
    return (
        f"privacy: sites have spent up to epsilon {most:.4f} of the target {target:g}; "
        "the remaining rounds' noise is calibrated to what is left"
    )


def check_resume(config: Config, run_dir: Path) -> tuple[Checkpoint, str | None]:
    """The checkpoint of ``run_dir``, if ``config`` can continue it; and a note on privacy."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise FileNotFoundError(f"{saved_file}: not found; cannot resume without the run's config")
    checkpoint = load_checkpoint(run_dir)
    _changed(load_config(saved_file), config)
    if checkpoint.strategy != config.federation.strategy:
        raise ConfigError(
            f"federation.strategy: the checkpoint is for '{checkpoint.strategy}', "
            f"not '{config.federation.strategy}'"
        )
    return checkpoint, _privacy_left(config, checkpoint)


def check_adapters(config: Config, checkpoint: Checkpoint | None) -> None:
    """The method builds on the backbone; a checkpoint holds exactly its shared tensors."""
    initial = from_record(initial_adapters(config))
    if checkpoint is None:
        return
    saved = from_record(checkpoint.arrays)
    if saved.keys() != initial.keys():
        extra = sorted(saved.keys() - initial.keys()) + sorted(initial.keys() - saved.keys())
        raise ConfigError(f"method.name: the checkpoint's adapters differ in {extra[0]!r}")
    for key, tensor in initial.items():
        if saved[key].shape != tensor.shape:
            raise ConfigError(
                f"method: the checkpoint's {key!r} has shape {tuple(saved[key].shape)}, "
                f"the config builds {tuple(tensor.shape)}"
            )


def preflight(config: Config, *, resume: Path | None = None) -> str | None:
    """Every check above (``resume``: the run folder to continue); returns a note to print."""
    checkpoint, note = check_resume(config, resume) if resume is not None else (None, None)
    check_data(config)
    check_adapters(config, checkpoint)
    return note
