"""A deployed site's own privacy floor: the least it accepts, whatever a run config says.

The run config comes from whoever submits the run; a site's data is the site's. So the
site's node config (its SuperNode's ``--node-config``, on its own machine) names its
minimums, and the site's trusted code checks every train message against them::

    require-dp=true  require-secure-mode=true  require-secagg=true  max-rounds=20
    max-epsilon-run=8.0  max-epsilon-total=16.0  floor-delta=1e-5
    min-noise=0.8  max-sample-rate=0.1
    allowed-methods="dga,output"  allowed-levels="gray"

Two moments: :meth:`Floor.admit` before anything is trained (DP off, SecAgg+ off, a method,
level or round count not allowed); :meth:`Floor.release` after the round trained and before
its update leaves the site, on what DP-SGD actually did (noise, sample rate, steps). Only a
released update spends privacy, so the release check is exact: an update that would cross a
limit never leaves, and the round's spend is recorded in the site's ledger first
(``state-dir/privacy-ledger.json``, under a lock, atomically replaced), one history per run,
so every run on this data draws from one lifetime budget. Epsilon is the RDP accountant's
at the site's own ``floor-delta``: the run's delta and accountant do not enter.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedgray.config import Config
from fedgray.fl.common.private import SiteRefusal
from fedgray.privacy.ledger import Entry, rdp_epsilon

LEDGER_FILE = "privacy-ledger.json"


def _names(value: Any) -> tuple[str, ...]:
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


@dataclass(frozen=True)
class Floor:
    """A site's minimums (None: no limit on that point); see the module docstring."""

    require_dp: bool = False
    require_secure_mode: bool = False
    require_secagg: bool = False
    max_rounds: int | None = None
    max_epsilon_run: float | None = None
    max_epsilon_total: float | None = None
    floor_delta: float = 1e-5
    min_noise: float | None = None
    max_sample_rate: float | None = None
    allowed_methods: tuple[str, ...] = ()
    allowed_levels: tuple[str, ...] = ()

    @property
    def limits_dp(self) -> bool:
        """Whether any limit needs DP-SGD's accounting (so DP must be on)."""
        limits = (self.max_epsilon_run, self.max_epsilon_total, self.min_noise)
        return self.require_dp or any(v is not None for v in (*limits, self.max_sample_rate))

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> Floor:
        """The floor named in ``node_config`` (keys as in the module docstring); one line
        naming a key whose value is not of its kind."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            key = spec.name.replace("_", "-")
            if key not in node_config:
                continue
            raw = node_config[key]
            parse, kind = _PARSERS[str(spec.type)]
            try:
                values[spec.name] = parse(raw)
            except (TypeError, ValueError):
                raise ValueError(f"node-config {key}: {raw!r} is not {kind}") from None
        floor = cls(**values)
        for name in ("max_epsilon_run", "max_epsilon_total", "min_noise", "max_sample_rate"):
            value = getattr(floor, name)
            if value is not None and value <= 0:
                raise ValueError(f"node-config {name.replace('_', '-')}: must be > 0, got {value}")
        if not 0 < floor.floor_delta < 1:
            raise ValueError(f"node-config floor-delta: in (0, 1), got {floor.floor_delta}")
        return floor

    def admit(self, config: Config, *, server_round: int) -> None:
        """Refuse, before anything is trained, a round that breaks a rule the run config
        shows: DP or SecAgg+ off, a method, level or round number not allowed."""
        problems = []
        if self.limits_dp and not config.privacy.enabled:
            problems.append("privacy.enabled is false, this site requires DP-SGD")
        if self.require_secure_mode and not config.privacy.secure_mode:
            problems.append(
                "privacy.secure_mode is false (noise seeded from the run config, which its "
                "submitter can draw again), this site requires it"
            )
        if self.require_secagg and not config.federation.secure_aggregation.enabled:
            problems.append("federation.secure_aggregation.enabled is false, this site requires it")
        if self.allowed_methods and config.method.name not in self.allowed_methods:
            allowed = ", ".join(self.allowed_methods)
            problems.append(f"method.name '{config.method.name}' is not one of {allowed}")
        if self.allowed_levels and config.backbone.level not in self.allowed_levels:
            problems.append(
                f"backbone.level '{config.backbone.level}' is not one of "
                f"{', '.join(self.allowed_levels)}"
            )
        if self.max_rounds is not None:
            asked = max(config.federation.num_rounds, server_round)
            if asked > self.max_rounds:
                problems.append(f"round {asked} is above this site's max-rounds {self.max_rounds}")
        if problems:
            raise SiteRefusal("site floor: " + "; ".join(problems) + ": not training")

    def release(self, state_dir: Path | None, run_id: int, spent: Entry | None) -> None:
        """Record ``spent`` (this round's ``(noise, sample rate, steps)``; None: trained
        without DP accounting) in the site's ledger for run ``run_id``, or raise
        :class:`SiteRefusal` (nothing recorded) when it breaks a limit; the update may
        leave only after this returns."""
        if spent is None:
            if self.limits_dp:
                raise SiteRefusal("site floor: the round has no DP accounting: update not sent")
            return
        noise, rate, _ = spent
        problems = []
        if self.min_noise is not None and noise < self.min_noise:
            problems.append(f"noise multiplier {noise:.4g} is below min-noise {self.min_noise:g}")
        if self.max_sample_rate is not None and rate > self.max_sample_rate:
            problems.append(
                f"sample rate {rate:.4g} is above max-sample-rate {self.max_sample_rate:g}"
            )
        if problems:
            raise SiteRefusal("site floor: " + "; ".join(problems) + ": update not sent")
        if self.max_epsilon_run is None and self.max_epsilon_total is None:
            return
        if state_dir is None:
            raise SiteRefusal("site floor: an epsilon limit needs the node config's state-dir")
        with _locked_ledger(state_dir) as runs:
            own = [*runs.get(str(run_id), []), spent]
            every = [*(e for key, hist in runs.items() if key != str(run_id) for e in hist), *own]
            for limit, history, what in (
                (self.max_epsilon_run, own, "max-epsilon-run"),
                (self.max_epsilon_total, every, "max-epsilon-total (all runs on this data)"),
            ):
                if limit is None:
                    continue
                epsilon = rdp_epsilon(history, self.floor_delta)
                if epsilon > limit:
                    raise SiteRefusal(
                        f"site floor: this round would take epsilon to {epsilon:.4f} (delta "
                        f"{self.floor_delta:g}), above {what} {limit:g}: update not sent"
                    )
            runs[str(run_id)] = own


FLOOR_KEYS = tuple(spec.name.replace("_", "-") for spec in fields(Floor))
"""The node-config keys a floor reads."""


def spent_epsilon(state_dir: Path, *, delta: float) -> dict[str, float]:
    """Epsilon (RDP, at ``delta``) of each run in the site's ledger and of them all
    (``"total"``): what the site has released of its data so far."""
    path = state_dir / LEDGER_FILE
    runs = _read(path) if path.is_file() else {}
    spent = {run: rdp_epsilon(history, delta) for run, history in runs.items()}
    spent["total"] = rdp_epsilon([e for h in runs.values() for e in h], delta)
    return spent


def _read(path: Path) -> dict[str, list[Entry]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {run: [(float(n), float(q), int(s)) for n, q, s in h] for run, h in data.items()}


@contextlib.contextmanager
def _locked_ledger(state_dir: Path) -> Iterator[dict[str, list[Entry]]]:
    """The site's ledger, read under an exclusive lock (ClientApps of two runs may train
    at once) and written back atomically if the block ends without an exception."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # no other user reads or locks it
    path = state_dir / LEDGER_FILE
    with (state_dir / f"{LEDGER_FILE}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = _read(path) if path.is_file() else {}
        yield runs
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(runs), encoding="utf-8")
        os.replace(tmp, path)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError(value)
    return int(value)


_PARSERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "bool": (_bool, "true or false"),
    "int | None": (_integer, "an integer"),
    "float | None": (_number, "a number"),
    "float": (_number, "a number"),
    "tuple[str, ...]": (_names, "a comma-separated list"),
}
"""A floor field's annotation -> how a node-config value is read for it, and what it must be."""
