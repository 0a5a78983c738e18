"""A deployed site whose data folder vanishes or turns malformed between rounds:
it fails in one line naming the path, and the run goes on without it.

In-process (a :class:`LocalGrid` whose nodes carry ``data-dir`` as deployed SuperNodes do);
the SuperNode-start case is in ``tests/deploy/test_deployment.py`` and
``tests/deploy/test_site_setup.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fedgray.deploy.trial_folders import write_partition_folders
from fedgray.fl.clientapp.app import make_client_app
from fedgray.fl.simulation.local_grid import FIRST_NODE_ID, LocalGrid
from tests.helpers import micro_config, run_on


def _remove(data: Path) -> str:
    shutil.rmtree(data)
    return f"NodeConfigError: node-config data-dir: {data}: no such directory"


def _garbage(data: Path) -> str:
    table = data / "train" / "captions.csv"
    table.write_bytes(b"\xff\xfe\x00garbage\x89PNG")
    return f"NodeConfigError: node-config data-dir: {table}: not UTF-8 text (byte 0)"


def _truncated(data: Path) -> str:
    """Cut in the third row: the header and two rows stand, the third lacks its caption."""
    table = data / "train" / "captions.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    table.write_text("\n".join([*lines[:3], lines[3][:10]]), encoding="utf-8")
    return f"ValueError: {table} line 4: empty caption, label"


@pytest.mark.parametrize("damage", [_remove, _garbage, _truncated], ids=lambda f: f.__name__[1:])
def test_a_site_whose_data_folder_vanishes_or_breaks_between_rounds_is_left_out(
    tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    """Three deployed sites train round 1; then site-1's folder is removed, or its
    captions.csv replaced by garbage or cut mid-row. Round 2 goes on with the other two, the
    server's warning names site-1 with the one-line reason naming the path, metrics.jsonl's
    failed_sites lists it, and the run ends normally.

    A site re-checks its folder with every message (``config_at_node`` runs ``check_data_dir``
    before the per-process data cache is consulted, and a changed row count is a new cache
    key), so a folder that vanished is noticed at the next round rather than trained on from
    memory. That is the right behaviour: the operator who removed or broke a site's data did
    not mean the site to go on training on it. A deployed SuperNode runs each message's
    ClientApp in a process of its own (one token per task), so it reads the folder afresh
    anyway; this in-process grid, like a Ray actor, keeps its caches between rounds and is
    the stricter case to test.
    """
    config = micro_config(tmp_path)
    folders = write_partition_folders(config, 3, tmp_path / "sites")
    grid = LocalGrid(make_client_app(config), 3)
    for i, folder in enumerate(folders):
        grid.contexts[FIRST_NODE_ID + i].node_config["data-dir"] = str(folder)
    reasons: list[str] = []
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("round 1/"):  # round 1 is over; round 2 has not started
            reasons.append(damage(folders[1]))

    result = run_on(config, grid, echo)  # returns: the run ends normally
    assert len(reasons) == 1
    node = FIRST_NODE_ID + 1
    assert [line for line in lines if "failed" in line] == [
        f"round 2: site 'site-1' (node {node}) failed to {phase}: {reasons[0]}; 2 of 3 sites {done}"
        for phase, done in (("train", "trained"), ("evaluate", "evaluated"))
    ]
    assert not any("Traceback" in line or "\n" in line for line in lines)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["failed_sites"] for r in logged] == [[], [], ["site-1"]]
    assert [r["sites_trained"] for r in logged] == [0, 3, 2]
    assert [r["round"] for r in result.records] == [0, 1, 2]
    assert (tmp_path / "run" / "adapters.pt").exists()
