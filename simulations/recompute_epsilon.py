"""Recompute one site's final epsilon of a federated run from scratch, independently.

Reads the run folder: the resolved ``config.yaml``, the site's ledger (its accountant
history: noise multiplier, sample rate, steps) from ``checkpoint.pt`` and the epsilon the
site reported each round from ``metrics.jsonl``. It then

- replays the ledger's steps into a fresh Opacus accountant of the configured kind (made
  by Opacus' own ``create_accountant``, not by fedgray) and of the other kind as a
  cross-check (RDP vs PRV);
- rebuilds the history from the config alone: sample rate = batch size / the site's
  training samples, noise multiplier = the configured one or Opacus' calibration for
  ``target_epsilon`` over all planned steps, steps = local steps x the rounds the site
  trained (the rounds in which its reported epsilon grew), and computes epsilon from it;

and prints all of them next to the epsilon the site reported. For a ``fedgray adapt`` run
folder (no checkpoint) it recomputes the single site's epsilon from the config alone::

    python -m simulations.recompute_epsilon RUN_DIR [--site 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedgray.cli import EXPECTED_ERRORS
from fedgray.config import Config
from fedgray.fl.common.partitions import partition_indices
from fedgray.fl.serverapp.checkpoint import CHECKPOINT, load_checkpoint
from fedgray.resolver import load_config

KINDS = ("rdp", "prv")
History = list[tuple[float, float, int]]


def epsilon_of(history: History, *, kind: str, delta: float) -> float:
    """Epsilon at ``delta`` after every step of ``history``, in a fresh ``kind`` accountant."""
    accountant = create_accountant(kind)
    for noise_multiplier, sample_rate, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    return float(accountant.get_epsilon(delta=delta))


@dataclass(frozen=True)
class Recomputation:
    """One site's reported epsilon and its recomputations."""

    site: int
    kind: str
    delta: float
    ledger: History
    from_config: History
    rounds_trained: int
    reported: float
    recomputed: dict[str, float]  # accountant kind -> epsilon of the ledger's history
    recomputed_from_config: float


def _reported(run_dir: Path, site: int) -> list[float]:
    """The site's epsilon as logged after each round (absent before it first trained)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line).get("privacy") or {} for line in lines if line]
    return [r["epsilon"][str(site)] for r in records if str(site) in r.get("epsilon", {})]


def _config_history(config: Config, *, site: int, rounds: int) -> History:
    fed, privacy = config.federation, config.privacy
    share = partition_indices(config, partition_id=site, num_partitions=fed.num_sites)
    sample_rate = min(1.0, config.train.batch_size / len(share.train))
    sigma = privacy.noise_multiplier
    if sigma is None:
        sigma = get_noise_multiplier(
            target_epsilon=privacy.target_epsilon,
            target_delta=privacy.delta,
            sample_rate=sample_rate,
            steps=fed.local_steps * fed.num_rounds,
            accountant=privacy.accountant,
        )
    return [(float(sigma), sample_rate, fed.local_steps * rounds)]


def recompute(run_dir: str | Path, *, site: int | None = None) -> Recomputation:
    """Recompute ``site``'s final epsilon (default: the site with the largest one)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    privacy = config.privacy
    if not privacy.enabled:
        raise ValueError(f"{run_dir}: privacy was not enabled in this run")
    ledgers = load_checkpoint(run_dir).privacy
    if site is None:
        site = int(max(ledgers, key=lambda s: ledgers[s]["epsilon"]))
    if str(site) not in ledgers:
        raise ValueError(f"{run_dir}: site {site} has no ledger (sites: {', '.join(ledgers)})")
    entry = ledgers[str(site)]
    history = [(float(n), float(q), int(s)) for n, q, s in entry["history"]]
    trajectory = _reported(run_dir, site)
    rounds = len(set(trajectory))  # epsilon grows with every round a site trains
    from_config = _config_history(config, site=site, rounds=rounds)
    return Recomputation(
        site=site,
        kind=entry["accountant"],
        delta=privacy.delta,
        ledger=history,
        from_config=from_config,
        rounds_trained=rounds,
        reported=trajectory[-1],
        recomputed={k: epsilon_of(history, kind=k, delta=privacy.delta) for k in KINDS},
        recomputed_from_config=epsilon_of(
            from_config, kind=entry["accountant"], delta=privacy.delta
        ),
    )


def recompute_adapt(run_dir: str | Path) -> tuple[float, float]:
    """A ``fedgray adapt`` run's reported epsilon and its recomputation from the config
    alone: sample rate = batch size / training samples, the configured noise multiplier or
    Opacus' calibration for ``target_epsilon`` over ``train.steps``, ``train.steps`` steps."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    privacy = config.privacy
    reported = json.loads((run_dir / "summary.json").read_text()).get("privacy")
    if not privacy.enabled or reported is None:
        raise ValueError(f"{run_dir}: privacy was not enabled in this run")
    sample_rate = min(1.0, config.train.batch_size / config.data.train_size)
    sigma = privacy.noise_multiplier
    if sigma is None:
        sigma = get_noise_multiplier(
            target_epsilon=privacy.target_epsilon,
            target_delta=privacy.delta,
            sample_rate=sample_rate,
            steps=config.train.steps,
            accountant=privacy.accountant,
        )
    history = [(float(sigma), sample_rate, config.train.steps)]
    recomputed = epsilon_of(history, kind=privacy.accountant, delta=privacy.delta)
    return float(reported["epsilon"]), recomputed


def _history_text(history: History) -> str:
    return "; ".join(f"sigma {n:.6f}, q {q:.6f}, {s} steps" for n, q, s in history)


def _versus(value: float, reported: float) -> str:
    return "equal" if value == reported else f"differs by {value - reported:+.3g}"


def report(r: Recomputation) -> list[str]:
    """The recomputation as printable lines."""
    other = next(k for k in KINDS if k != r.kind)
    rows = [
        ("reported by the site", r.reported, None),
        (f"recomputed, {r.kind} (ledger history)", r.recomputed[r.kind], r.reported),
        (f"recomputed, {r.kind} (config history)", r.recomputed_from_config, r.reported),
        (f"cross-check, {other} (ledger history)", r.recomputed[other], None),
    ]
    return [
        f"site {r.site}: accountant {r.kind}, delta {r.delta:g}, trained {r.rounds_trained} rounds",
        f"{'ledger (checkpoint)':<34}{_history_text(r.ledger)}",
        f"{'history from the config':<34}{_history_text(r.from_config)}",
        *(
            f"{label:<34}{value:.12f}" + ("" if ref is None else f"  ({_versus(value, ref)})")
            for label, value, ref in rows
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Print the recomputation of one site of a run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a federated run folder with privacy enabled")
    parser.add_argument("--site", type=int, help="partition id (default: largest epsilon)")
    args = parser.parse_args(argv)
    if not (Path(args.run_dir) / CHECKPOINT).is_file():
        reported, recomputed = recompute_adapt(args.run_dir)
        print(f"{'reported by fedgray adapt':<34}{reported:.12f}")
        versus = _versus(recomputed, reported)
        print(f"{'recomputed (config history)':<34}{recomputed:.12f}  ({versus})")
        return
    for line in report(recompute(args.run_dir, site=args.site)):
        print(line)


if __name__ == "__main__":
    try:
        main()
    except EXPECTED_ERRORS as error:
        sys.exit(f"recompute_epsilon: error: {error}")
