"""(4) Federation overhead: a federated round against the same local steps in a plain loop.

The federated side is the real server app (round loop, strategy, checkpoint) driving the
real client app over :class:`fedgray.fl.simulation.local_grid.LocalGrid`, Flower's Message API in
one process: what Flower and fedgray add around the sites' training, without Ray's
process hops. The plain side calls each site's round trainer (``train_round``: the model
built from the global tensors, ``federation.local_steps`` local steps) directly, site
after site. The app runs all its rounds in one call, so the two sides alternate by
blocks of rounds, not step by step; per-round seconds come from the run's own records.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import torch

from fedgray.config import Config
from fedgray.resolver import load_config

from .sections import SITE_MODEL, Figure, Sizes


def _config(root: str, sizes: Sizes, rounds: int, name: str) -> Config:
    sites, steps = sizes.federation
    return load_config(
        None,
        [
            f"backbone.name={SITE_MODEL}",
            "backbone.pretrained=null",
            f"data.train_size={sites * sizes.site_batch * 2}",
            "data.test_size=8",
            f"train.batch_size={sizes.site_batch}",
            f"federation.num_sites={sites}",
            f"federation.num_rounds={rounds}",
            f"federation.local_steps={steps}",
            "federation.fraction_evaluate=0",
            "federation.central_eval=false",
            f"output.root={root}",
            f"output.name={name}",
        ],
    )


def _federated_rounds(config: Config) -> list[float]:
    """Seconds of each training round of one in-process federated run."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flwr.app import Context, RecordDict

    from fedgray.fl.clientapp.app import make_client_app
    from fedgray.fl.serverapp.app import make_server_app
    from fedgray.fl.simulation.local_grid import LocalGrid

    records: list[dict[str, Any]] = []
    grid = LocalGrid(make_client_app(config, quiet=True), config.federation.num_sites, record=False)
    app = make_server_app(
        config, echo=lambda _: None, on_result=lambda result, _: records.extend(result.records)
    )
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    app(grid, context)
    return [float(r["seconds"]) for r in records if r["round"] > 0]


def _plain_round(config: Config, rnd: int) -> float:
    """Seconds of every site's local training of round ``rnd``, called directly."""
    from fedgray.fl.clientapp.client import round_seed
    from fedgray.fl.common.cache import shared_backbone
    from fedgray.fl.common.partitions import load_partition
    from fedgray.train.gradient import start, train_round
    from fedgray.train.kinds import SiteRound

    backbone, sites = shared_backbone(config), config.federation.num_sites
    shared = start(
        config, backbone, lambda: load_partition(config, partition_id=0, num_partitions=1).heldout
    )
    data = [
        load_partition(config, partition_id=i, num_partitions=sites).train for i in range(sites)
    ]
    started = time.perf_counter()
    for i, train in enumerate(data):
        seed = round_seed(config.federation.seed, rnd, i)
        torch.manual_seed(seed)
        train_round(SiteRound(config, backbone, train, shared, {}, rnd, i, seed))
    return time.perf_counter() - started


def federation(sizes: Sizes, *, blocks: int = 2) -> list[Figure]:
    """A federated round's wall time over the same sites' local steps in a plain loop:
    ``blocks`` pairs of (plain rounds, a fresh federated run of as many rounds), the ratio
    of their medians per pair, the median over pairs."""
    rounds, ratios = sizes.reps, []
    with tempfile.TemporaryDirectory(prefix="fgbench") as root:
        _plain_round(_config(root, sizes, rounds, "warm-up"), 1)  # data and backbone caches
        for block in range(blocks):
            config = _config(root, sizes, rounds, f"block{block}")
            plain = [_plain_round(config, r) for r in range(1, rounds + 1)]
            federated = _federated_rounds(config)
            ratios.append(statistics.median(federated) / statistics.median(plain))
    sites, steps = sizes.federation
    section = (
        f"federation ({SITE_MODEL}, {sites} sites x {steps} steps, batch "
        f"{sizes.site_batch}, in-process grid)"
    )
    return [
        Figure(
            section,
            "federated round / the same local steps in a loop",
            statistics.median(ratios),
            goal=1.25,
            note="alternating blocks of rounds; Flower's Message API, no Ray",
        )
    ]
