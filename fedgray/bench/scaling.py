"""(5) Scaling: one federated round's wall time and peak memory as simulated sites grow.

Each site count runs in a fresh Python process (peak RSS, ``ru_maxrss``, is per process
and only grows): one round in which every site trains ``federation.local_steps`` steps,
all sites handled in-process by :class:`fedgray.fl.simulation.local_grid.LocalGrid` on the
per-process backbone, which is what one Ray actor does under ``fedgray run`` (one backbone
copy per worker, not per site). Reported against one site: peak memory, and wall time
per site-step (flat when the per-site cost does not grow with the federation).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from typing import Any

SITE_COUNTS = (1, 8, 32, 64, 128)
LOCAL_STEPS = 2


def measure(model: str, sites: int, root: str) -> dict[str, Any]:
    """One round with ``sites`` sites in this process: peak RSS (MB) and seconds."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    from flwr.app import Context, RecordDict

    from fedgray.fl.clientapp.app import make_client_app
    from fedgray.fl.common.cache import shared_backbone
    from fedgray.fl.serverapp.app import make_server_app
    from fedgray.fl.simulation.local_grid import LocalGrid
    from fedgray.resolver import load_config

    config = load_config(
        None,
        [
            f"backbone.name={model}",
            "backbone.pretrained=null",
            f"data.train_size={4 * sites}",
            "data.test_size=8",
            "train.batch_size=2",
            f"federation.num_sites={sites}",
            "federation.num_rounds=1",
            f"federation.local_steps={LOCAL_STEPS}",
            "federation.fraction_evaluate=0",
            "federation.central_eval=false",
            "federation.round_timeout=86400",  # 1,000 ViT-B-32 sites take longer than 600 s
            f"output.root={root}",
            f"output.name=sites{sites}",
        ],
    )
    shared_backbone(config)
    records: list[dict[str, Any]] = []
    grid = LocalGrid(make_client_app(config, quiet=True), sites, record=False)
    app = make_server_app(
        config, echo=lambda _: None, on_result=lambda result, _: records.extend(result.records)
    )
    app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    (trained,) = [r for r in records if r["round"] > 0]  # the one round
    if trained["sites_trained"] != sites:
        raise RuntimeError(f"{sites} sites: only {trained['sites_trained']} trained")
    return {
        "sites": sites,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "round_seconds": trained["seconds"],
    }


def curve(model: str, counts: tuple[int, ...] = SITE_COUNTS) -> list[dict[str, Any]]:
    """:func:`measure` for each site count, each in a child process, relative to the first."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="fgscale") as root:
        for sites in counts:
            code = (
                "import json, sys, torch; torch.set_num_threads(1); "
                "from fedgray.bench.scaling import measure; "
                f"print(json.dumps(measure({model!r}, {sites}, {root!r})))"
            )
            child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if child.returncode:
                last = (child.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"scaling: {model} at {sites} sites failed: {last}")
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    first = rows[0]
    for row in rows:
        row["memory_vs_first"] = row["peak_rss_mb"] / first["peak_rss_mb"]
        per_step = row["round_seconds"] / (row["sites"] * LOCAL_STEPS)
        row["site_step_vs_first"] = per_step / (
            first["round_seconds"] / (first["sites"] * LOCAL_STEPS)
        )
    return rows
