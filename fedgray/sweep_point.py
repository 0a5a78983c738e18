"""One point of a privacy-utility sweep: its overrides, its run folder and its CSV row.

Both the sweep (:mod:`fedgray.sweep`) and its recipe grid (:mod:`fedgray.sweep_grid`) run
points, so a point is a module below both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedgray.config import Config
from fedgray.config_schema import ConfigError
from fedgray.resolver import load_config

Echo = Callable[[str], None]


def _yaml_float(value: float) -> str:
    """``value`` as a YAML number (YAML reads ``1e-05``, without a dot, as a string)."""
    return np.format_float_positional(value, trim="-")


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a target epsilon (``inf``: no DP), a seed and, optionally, the
    training examples per site."""

    epsilon: float
    seed: int
    site_size: int | None = None
    trial: int | None = None  # the candidate of a recipe grid (fedgray.sweep_grid)

    @property
    def name(self) -> str:
        """The point's run folder name, e.g. ``eps4-seed0``, ``n200-eps4-seed0`` or, a grid's
        trial, ``eps2-seed0-trial1``."""
        size = "" if self.site_size is None else f"n{self.site_size}-"
        trial = "" if self.trial is None else f"-trial{self.trial}"
        return f"{size}eps{self.epsilon:g}-seed{self.seed}{trial}"

    def overrides(self, *, delta: float) -> list[str]:
        """Config overrides of this point (its folder: ``output.name``, the point's name)."""
        if math.isinf(self.epsilon):
            privacy = ["privacy.enabled=false"]
        else:
            privacy = [
                "privacy.enabled=true",
                "privacy.noise_multiplier=null",
                f"privacy.target_epsilon={_yaml_float(self.epsilon)}",
                f"privacy.delta={_yaml_float(delta)}",
            ]
        return [*privacy, f"federation.seed={self.seed}", f"output.name={self.name}"]

    def data_overrides(self, *, num_sites: int, holdout: float) -> list[str]:
        """``data.train_size`` that gives each of ``num_sites`` equal shares (the ``iid``
        partitioner's) ``site_size`` training examples after the held-out ``holdout``
        (nothing without a site size)."""
        from fedgray.fl.common.partitions import heldout_count

        if self.site_size is None:
            return []
        share = self.site_size
        while share - heldout_count(share, holdout) < self.site_size:
            share += 1
        return [f"data.train_size={share * num_sites}"]


def size_overrides(config_path: str, overrides: Sequence[str], point: Point) -> list[str]:
    """``point``'s :meth:`Point.data_overrides` for the config at ``config_path`` (with
    ``overrides``): its number of sites and held-out share."""
    fed = load_config(config_path, list(overrides)).federation
    return point.data_overrides(num_sites=fed.num_sites, holdout=fed.holdout)


def check_site_size(config_path: str, overrides: Sequence[str], site_size: int) -> None:
    """The datasets of ``config_path`` hold every site's share at ``site_size`` per site,
    else one line naming the site size: a sweep checks each before any point runs, since a
    point's run starts without the checks ``fedgray run`` makes and a size that does not fit
    would fail at its sites, after the points before it had run."""
    from fedgray.fl.serverapp.preflight import check_data

    sizes = size_overrides(config_path, overrides, Point(math.inf, 0, site_size))
    try:
        check_data(load_config(config_path, [*overrides, *sizes]))
    except ConfigError as error:
        raise ConfigError(f"--site-sizes {site_size}: {error}") from None


def _worst_site(run_dir: Path) -> dict[str, Any]:
    """Noise multiplier, sample rate and steps of the site with the largest epsilon."""
    from fedgray.fl.serverapp.checkpoint import load_checkpoint

    ledgers = load_checkpoint(run_dir).privacy
    if not ledgers:
        return {}
    site = max(ledgers, key=lambda s: ledgers[s]["epsilon"])
    history = ledgers[site]["history"]
    return {
        "noise_multiplier": history[-1][0],
        "sample_rate": history[-1][1],
        "steps": sum(int(steps) for _, _, steps in history),
    }


def point_config(
    config_path: str, overrides: Sequence[str], point: Point, *, root: Path, delta: float
) -> Config:
    """The config ``point`` runs: ``config_path`` with ``overrides``, the point's site size,
    privacy, seed and run folder (``root / point.name``)."""
    sizes = size_overrides(config_path, overrides, point)
    return load_config(
        config_path, [*overrides, *sizes, f"output.root={root}", *point.overrides(delta=delta)]
    )


def run_point(
    config_path: str,
    overrides: Sequence[str],
    point: Point,
    *,
    root: Path,
    delta: float,
    echo: Echo,
) -> dict[str, Any]:
    """Run one point into ``root / point.name``; its CSV row. ``echo`` gets its round lines."""
    from fedgray.fl.serverapp.report import COMPARED
    from fedgray.fl.simulation.local_grid import run_local
    from fedgray.tasks import TASKS

    config = point_config(config_path, overrides, point, root=root, delta=delta)
    started = time.perf_counter()
    result, summary, _ = run_local(config, echo=echo, record=False)
    privacy = result.records[-1].get("privacy")
    metric = TASKS[config.train.task].metric
    chosen = next(r for r in result.records if r["round"] == result.selected)
    return {
        "target_epsilon": point.epsilon,
        "seed": point.seed,
        "site_size": point.site_size,
        "achieved_max_epsilon": math.inf if privacy is None else privacy["max_epsilon"],
        "delta": None if privacy is None else privacy["delta"],
        "accountant": None if privacy is None else privacy["accountant"],
        "noise_multiplier": None,
        "sample_rate": None,
        "steps": None,
        **_worst_site(result.run_dir),
        **{k: summary["final"][k] for k in COMPARED},
        "metric": metric,
        f"validation_{metric}": chosen.get("validation", {}).get(metric),
        f"zero_shot_{metric}": summary["zero_shot"][metric],
        "gain_kept": None,  # filled in by with_gains once the non-private run is there
        "seconds": round(time.perf_counter() - started, 1),
        "run": point.name,
        "config": str(config_path),
    }
