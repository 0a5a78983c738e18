"""``fedgray bench --secagg``: what SecAgg+ costs a round, simulated and deployed.

Each row runs the same federation twice per block, in the clear and under SecAgg+ (DP-SGD
on in both, as a deployed site's floor requires), the order alternating from block to
block: at each of the simulated site counts on the in-process grid
(:mod:`fedgray.fl.simulation.local_grid`), and on a real loopback deployment (a SuperLink
and SuperNodes with TLS and node authentication, started as ``fedgray deploy demo``
starts them) next to the same sites simulated. A round's seconds and bytes come from the
run's own records (``seconds``; ``bytes_down + bytes_up``, the busiest site's); the first
round of each run is left out, since it opens the backbone and the data. A ratio is the
median over blocks of the ratio of the two medians within a block, so a change in
machine load hits both sides alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedgray.config import Config
from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.demo import demo_config, flwr_run, start_federation
from fedgray.deploy.trial_folders import seal_backbone, write_partition_folders
from fedgray.fl.simulation.local_grid import run_local
from fedgray.launch.processes import supervised
from fedgray.resolver import load_config

Echo = Callable[[str], None]
Records = list[dict[str, Any]]
SIMULATED_SITES = (8, 32, 128)
DEPLOYED_SITES = 3
DEPLOYED_GOAL = 1.3  # a deployed round in the clear against the same round simulated
SECURE_GOAL = 1.5  # a deployed SecAgg+ round against a deployed round in the clear
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Plan:
    """What ``--secagg`` measures: simulated site counts (``micro`` model; none: the
    deployed row and its simulated twin only), deployed sites (``model``, 0: none), rounds
    per run (the first left out), blocks of paired runs."""

    simulated: tuple[int, ...] = SIMULATED_SITES
    deployed: int = DEPLOYED_SITES
    rounds: int = 3
    blocks: int = 2
    micro: str = "fedgray-micro"
    model: str = "fedgray-tiny"
    site_samples: int = 32
    local_steps: int = 4

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(
                f"--rounds: needs at least 2 (the first is left out), got {self.rounds}"
            )
        if self.blocks < 1:
            raise ValueError(f"--blocks: must be >= 1, got {self.blocks}")
        if self.deployed != 0 and self.deployed < 3:
            raise ValueError(
                f"--deployed: SecAgg+ needs at least 3 sites (or 0), got {self.deployed}"
            )
        if any(n < 3 for n in self.simulated):
            raise ValueError(f"--sites: SecAgg+ needs at least 3 sites, got {self.simulated}")
        if not self.simulated and not self.deployed:
            raise ValueError("--deployed-only: needs --deployed sites (3 or more), got 0")


def bench_config(plan: Plan, model: str, sites: int, *, secure: bool, root: Path) -> Config:
    """``sites`` sites of random-weight ``model``, DP-SGD on, no evaluation, SecAgg+ on
    or off, results under ``root``."""
    overrides = [
        f"backbone.name={model}",
        "backbone.pretrained=null",
        f"data.train_size={sites * plan.site_samples}",
        "data.test_size=8",
        "train.batch_size=8",
        "train.threads=1",
        f"federation.num_rounds={plan.rounds}",
        f"federation.local_steps={plan.local_steps}",
        "federation.fraction_evaluate=0.0",
        "federation.central_eval=false",
        "privacy.enabled=true",
        "privacy.noise_multiplier=1.0",
        f"federation.secure_aggregation.enabled={'true' if secure else 'false'}",
        f"output.root={root}",
    ]
    return demo_config(load_config(None, overrides), sites)


@dataclass(frozen=True)
class Rounds:
    """A run's rounds after the first: seconds and bytes per site, medians."""

    seconds: float
    bytes: float

    @classmethod
    def of(cls, records: Records) -> Rounds:
        """From a run's per-round records (round 0, the start, and round 1 left out)."""
        kept = [r for r in records if r["round"] > 1]
        if not kept:
            raise ValueError("no round after the first in the run's records")
        return cls(
            statistics.median(float(r["seconds"]) for r in kept),
            statistics.median(float(r["bytes_down"] + r["bytes_up"]) for r in kept),
        )


@dataclass(frozen=True)
class Row:
    """One engine at one site count: medians of every block, and the paired ratios."""

    engine: str
    model: str
    sites: int
    plain_s: float
    secure_s: float
    plain_bytes: float
    secure_bytes: float
    time_ratio: float
    bytes_ratio: float

    @classmethod
    def of(cls, engine: str, model: str, sites: int, pairs: Sequence[tuple[Rounds, Rounds]]) -> Row:
        """From (plain, secure) pairs, one per block."""
        plain, secure = [p for p, _ in pairs], [s for _, s in pairs]
        return cls(
            engine,
            model,
            sites,
            statistics.median(r.seconds for r in plain),
            statistics.median(r.seconds for r in secure),
            statistics.median(r.bytes for r in plain),
            statistics.median(r.bytes for r in secure),
            statistics.median(s.seconds / p.seconds for p, s in pairs),
            statistics.median(s.bytes / p.bytes for p, s in pairs),
        )


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    """Flower at warnings only while the in-process grid runs: SecAgg+ logs each stage of
    each site, as the deployed sites' own processes do in their logs."""
    flower = logging.getLogger("flwr")
    level, propagate = flower.level, flower.propagate
    flower.setLevel(logging.WARNING)
    flower.propagate = False
    try:
        yield
    finally:
        flower.setLevel(level)
        flower.propagate = propagate


def simulated(config: Config) -> Rounds:
    """One run of ``config`` on the in-process grid."""
    with _quiet_flower():
        result, _, _ = run_local(config, record=False)
    return Rounds.of(result.records)


def _ordered(block: int, sides: Sequence[bool]) -> list[bool]:
    """``sides`` in order on even blocks, reversed on odd ones."""
    return list(sides) if block % 2 == 0 else list(reversed(sides))


def simulated_rows(plan: Plan, root: Path, *, echo: Echo) -> list[Row]:
    """A row per simulated site count."""
    rows = []
    for sites in plan.simulated:
        pairs = []
        for block in range(plan.blocks):
            found: dict[bool, Rounds] = {}
            for secure in _ordered(block, (False, True)):
                name = f"sim-{sites}-{'secure' if secure else 'plain'}-{block}"
                config = bench_config(plan, plan.micro, sites, secure=secure, root=root / name)
                found[secure] = simulated(config)
            pairs.append((found[False], found[True]))
        rows.append(Row.of("simulated", plan.micro, sites, pairs))
        echo(f"  simulated, {sites} sites: SecAgg+ / plain {rows[-1].time_ratio:.2f}x")
    return rows


def deployed_rows(plan: Plan, root: Path, *, echo: Echo) -> tuple[Row, Row, float]:
    """The deployed row, its simulated twin (same config and sites), and the paired ratio
    of a deployed plain round to the same round simulated. Every process started here is
    stopped before it returns, however it returns."""
    sites = plan.deployed
    base = bench_config(plan, plan.model, sites, secure=False, root=root)
    owner = seal_backbone(base, root / "owner")
    data_dirs = write_partition_folders(base, sites, root / "sites")
    credentials = create_credentials(root / "credentials", sites)
    dep: list[tuple[Rounds, Rounds]] = []
    sim: list[tuple[Rounds, Rounds]] = []
    with supervised() as processes:
        link, _ = start_federation(
            processes, root, credentials, data_dirs, owner, echo=lambda _: None
        )
        for block in range(plan.blocks):
            found: dict[tuple[str, bool], Rounds] = {}
            for secure in _ordered(block, (False, True)):
                name = f"{'secure' if secure else 'plain'}-{block}"
                config = bench_config(plan, plan.model, sites, secure=secure, root=root)
                results = flwr_run(
                    processes,
                    link.options.run_dir,
                    config,
                    echo=lambda _: None,
                    timeout=RUN_TIMEOUT_S,
                    name=f"dep-{name}",
                )
                lines = (results / "metrics.jsonl").read_text().splitlines()
                found["deployed", secure] = Rounds.of([json.loads(line) for line in lines])
                twin = bench_config(
                    plan, plan.model, sites, secure=secure, root=root / f"sim-{name}"
                )
                found["simulated", secure] = simulated(twin)
            dep.append((found["deployed", False], found["deployed", True]))
            sim.append((found["simulated", False], found["simulated", True]))
    deployed = Row.of("deployed", plan.model, sites, dep)
    twin_row = Row.of("simulated", plan.model, sites, sim)
    versus = statistics.median(
        d.seconds / s.seconds for (d, _), (s, _) in zip(dep, sim, strict=True)
    )
    echo(f"  deployed, {sites} sites: SecAgg+ / plain {deployed.time_ratio:.2f}x")
    return deployed, twin_row, versus


def table(rows: Sequence[Row], versus: float | None) -> str:
    """The markdown table of ``rows`` and, with deployed rows, the two goal lines."""
    lines = [
        "| engine | model | sites | round, plain | round, SecAgg+ | SecAgg+ / plain, time "
        "| KB per site per round, plain | SecAgg+ | SecAgg+ / plain, bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.engine} | {r.model} | {r.sites} | {r.plain_s:.2f} s | {r.secure_s:.2f} s "
            f"| {r.time_ratio:.2f}x | {r.plain_bytes / 1e3:.1f} | {r.secure_bytes / 1e3:.1f} "
            f"| {r.bytes_ratio:.2f}x |"
        )
    deployed = [r for r in rows if r.engine == "deployed"]
    if deployed and versus is not None:
        r = deployed[0]
        lines += [
            "",
            f"- deployed plain round / the same round simulated ({r.sites} sites): "
            f"{versus:.2f}x (goal <= {DEPLOYED_GOAL})",
            f"- deployed SecAgg+ round / deployed plain round: {r.time_ratio:.2f}x "
            f"(goal <= {SECURE_GOAL})",
        ]
    return "\n".join(lines) + "\n"


def bench_secagg(plan: Plan, out: Path, *, echo: Echo) -> str:
    """Every row of ``plan``; writes ``out/secagg.json`` and ``out/secagg.md``, returns
    the table."""
    rows: list[Row] = []
    versus = None
    with tempfile.TemporaryDirectory(prefix="fgsecagg") as folder:
        root = Path(folder)
        if plan.simulated:
            echo(f"bench --secagg: simulated {', '.join(map(str, plan.simulated))} sites ...")
            rows += simulated_rows(plan, root / "simulated", echo=echo)
        if plan.deployed:
            echo(f"bench --secagg: {plan.deployed} sites deployed on loopback ...")
            deployed, twin, versus = deployed_rows(plan, root / "deployed", echo=echo)
            rows += [twin, deployed]
    text = table(rows, versus)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "plan": asdict(plan),
        "rows": [asdict(r) for r in rows],
        "deployed_vs_simulated": versus,
    }
    (out / "secagg.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "secagg.md").write_text(text)
    return text
