"""A trained model as a site uses it: from a run folder or a signed bundle, on its backbone.

Both sources give the same :class:`TrainedModel`: the resolved config the adapters were
trained under, the adapter tensors, and the facts a bundle carries. The site's own
``--set`` items may change where the backbone comes from (its artifact, keys, an isolated
runtime, the device), never what the adapters were trained for: another backbone or method
is refused with one line, before the backbone is opened.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from fedgray.backbone import Backbone
from fedgray.backbone.artifact import read_manifest
from fedgray.backbone.loading import BUILTIN_TAG
from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.fl.clientapp.state import load_personal
from fedgray.materials import open_backbone
from fedgray.resolver import config_from_dict
from fedgray.runs import load_adapters
from fedgray.train.kinds import kind_of
from fedgray.use.facts import run_facts

if TYPE_CHECKING:
    from fedgray.use.scorers import Scorer

# Overrides a site may give: where its backbone comes from and how it runs, not what it is.
USE_KEYS = (
    "backbone.artifact",
    "backbone.verify_key",
    "backbone.content_key",
    "backbone.isolated",
    "backbone.runtime",
    "backbone.query_budget",
    "train.device",
    "train.precision",
    "train.threads",
)
# Overrides that would describe other adapters: refused with one line (checked below).
TRAINED_FOR = ("backbone.name", "backbone.level", "method")


@dataclass(frozen=True)
class TrainedModel:
    """The adapters of one run and what they were trained under.

    ``kind``: ``federated`` (``fedgray run``) or ``adapt``; ``facts``: the run's summary,
    privacy ledger and data description as :mod:`fedgray.use.bundle` writes them;
    ``adapters_sha256``: the global adapters' file hash, which a personal-only bundle names.
    """

    config: Config
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    kind: str
    facts: dict[str, Any]
    origin: Path
    adapters_sha256: str


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_identity(config: Config) -> dict[str, Any]:
    """What names the backbone without holding it: the architecture, where its weights came
    from, and their hash (the sealed artifact's signed one, or a local checkpoint's)."""
    spec = config.backbone
    identity: dict[str, Any] = {"name": spec.name, "level": spec.level}
    if spec.artifact is not None:
        assert spec.verify_key is not None  # by BackboneConfig
        manifest = read_manifest(spec.artifact, verify_key=spec.verify_key)
        identity.update(
            source="sealed artifact",
            weights_sha256=manifest.weights_sha256,
            format_version=manifest.format_version,
            sealed_at=manifest.created_at,
        )
    elif spec.runtime is not None:
        identity["source"] = "served runtime"
    elif spec.pretrained == BUILTIN_TAG:
        from fedgray.owner.pretrain import builtin_checkpoint

        checkpoint = builtin_checkpoint(spec.name, config.pretrain, progress=False)
        identity.update(source=BUILTIN_TAG, weights_sha256=_sha256_file(Path(checkpoint)))
    elif spec.pretrained is not None and Path(spec.pretrained).is_file():
        identity.update(source="checkpoint", weights_sha256=_sha256_file(Path(spec.pretrained)))
    else:  # an open_clip tag, or random weights seeded by the config
        identity["source"] = spec.pretrained or f"random (seed {config.pretrain.seed})"
    return identity


def config_for_use(saved: dict[str, Any], overrides: list[str], where: Path) -> Config:
    """The saved config with a site's ``overrides``: only :data:`USE_KEYS`, one line else."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith(TRAINED_FOR) or key not in USE_KEYS:
            raise ConfigError(
                f"{key}: not a site setting; {where} fixes what the adapters were trained "
                f"for (a site may set: {', '.join(USE_KEYS)})"
            )
    return config_from_dict(saved, overrides)


def read_run(run_dir: Path, overrides: list[str]) -> TrainedModel:
    """A finished run folder's adapters and config, with the site's ``overrides``."""
    config_file, adapters = run_dir / "config.yaml", run_dir / "adapters.pt"
    for path in (config_file, adapters):
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a finished run (no {path.name})")
    saved = yaml.safe_load(config_file.read_text())
    config = config_for_use(saved, overrides, run_dir)
    state, meta = load_adapters(adapters, backbone=saved["backbone"]["name"])
    facts = run_facts(run_dir)
    digest = _sha256_file(adapters)
    return TrainedModel(config, state, meta, facts["kind"], facts, run_dir, digest)


def personal_file(model: TrainedModel, state_dir: Path) -> Path:
    """A site's personal adapters (``federation.personal``) of the round the global ones come
    from, in its state folder (``RUN_DIR/sites/site-N`` in simulation, or its ``state-dir``)."""
    if not model.config.federation.personal:
        raise ValueError(f"{model.origin}: the run keeps no personal adapters")
    selected = model.meta.get("round")
    path = state_dir / f"personal-{selected}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{state_dir}: no personal adapters of round {selected}")
    return path


def with_personal(model: TrainedModel, state_dir: Path) -> TrainedModel:
    """``model`` with the site's own personal adapters over the global ones."""
    selected = int(personal_file(model, state_dir).stem.removeprefix("personal-"))
    return replace(model, state={**model.state, **load_personal(state_dir, upto=selected)})


def check_trained_for(model: TrainedModel) -> None:
    """Refuse adapters that the config's backbone or method would not take (one line)."""
    config, meta = model.config, model.meta
    if meta.get("backbone") != config.backbone.name:
        raise ValueError(
            f"{model.origin}: adapters were trained for backbone '{meta.get('backbone')}', "
            f"not '{config.backbone.name}'"
        )
    if meta.get("method") != config.method.name:
        raise ValueError(
            f"{model.origin}: adapters were trained by method '{meta.get('method')}', "
            f"not '{config.method.name}'"
        )


def open_adapted(model: TrainedModel) -> tuple[Backbone, Scorer]:
    """The site's sealed backbone with the trained model over it, as the run built it.

    Random backbone weights are drawn as the run drew them (federated runs seed them with
    ``pretrain.seed``, ``fedgray adapt`` with ``train.seed``), so a random test backbone
    is the run's own. The scorer is the one of the method's trainer kind
    (:data:`fedgray.use.scorers.SCORERS`).
    """
    from fedgray.use.scorers import SCORERS

    config = model.config
    check_trained_for(model)
    kind = kind_of(config.method)
    if kind.name not in SCORERS:
        raise ValueError(
            f"method.name: '{config.method.name}' ({kind.name}) has no scorer for "
            "predict and evaluate"
        )
    seed = config.pretrain.seed if model.kind == "federated" else config.train.seed
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = open_backbone(config, progress=False)
    expected = model.facts.get("backbone")
    if expected is not None:
        _check_identity(expected, backbone_identity(config), model.origin)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    return backbone, SCORERS[kind.name](config, backbone, model.state, model.kind)


def _check_identity(expected: dict[str, Any], actual: dict[str, Any], where: Path) -> None:
    for key in ("name", "weights_sha256"):
        if key in expected and key in actual and expected[key] != actual[key]:
            raise ValueError(
                f"{where}: made for backbone {key} {expected[key]!r}; this site's backbone "
                f"has {actual[key]!r}"
            )
