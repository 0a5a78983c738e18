"""Peak memory of simulated sites sharing one sealed backbone: 1 site vs 32 sites.

Each measurement runs in a fresh Python process: one federated round (every site trains one
local step and evaluates) of a randomly initialised ViT-B-32-sized CLIP, with the sites run
in-process by :class:`fedgray.fl.local_grid.LocalGrid`. That is exactly what one Ray actor
does under ``fedgray run`` (default ``federation.actors=1``): all simulated sites handled by
one process use the backbone from the per-process cache, so the backbone is held once, not
once per site. The process's peak RSS (``ru_maxrss``) is compared for 1 and 32 sites.

    python -m simulations.bench_memory [--sites 1 32] [--model ViT-B-32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def measure(model: str, sites: int, root: str) -> dict[str, float]:
    """One round with ``sites`` sites in this process; returns sizes in MB and seconds."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    from flwr.app import Context, RecordDict

    from fedgray.config import load_config
    from fedgray.fl import make_client_app, make_server_app
    from fedgray.fl.cache import shared_backbone
    from fedgray.fl.local_grid import LocalGrid

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
            "federation.local_steps=1",
            "federation.holdout=0.25",
            "federation.central_eval=false",
            f"output.root={root}",
            f"output.name=sites{sites}",
        ],
    )
    started = time.perf_counter()
    backbone = shared_backbone(config)
    grid = LocalGrid(make_client_app(config), sites)
    app = make_server_app(config, echo=lambda _: None)
    app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    return {
        "sites": sites,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "backbone_mb": backbone.interface.parameter_count * 4 / 2**20,
        "messages": len(grid.received),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    """Measure each site count in a child process and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--sites", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.model, args.child, args.root)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="fgmem") as root:
        for sites in args.sites:
            command = [sys.executable, "-m", "simulations.bench_memory", "--model", args.model]
            command += ["--child", str(sites), "--root", root]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            r = results[-1]
            print(
                f"{r['sites']:>3} sites: peak RSS {r['peak_rss_mb']:7.0f} MB "
                f"({r['messages']} messages, {r['seconds']:.0f} s)",
                flush=True,
            )
    first, last = results[0], results[-1]
    naive = first["peak_rss_mb"] + (last["sites"] - first["sites"]) * first["backbone_mb"]
    print(
        f"backbone {args.model}: {first['backbone_mb']:.0f} MB of float32 weights\n"
        f"peak RSS ratio {last['sites']} vs {first['sites']} sites: "
        f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x "
        f"(a backbone copy per site would need about {naive:.0f} MB, "
        f"{naive / first['peak_rss_mb']:.1f}x)"
    )


if __name__ == "__main__":
    main()
