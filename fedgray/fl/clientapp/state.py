"""A site's own durable state: its personal adapters, round by round, on its own disk.

Personal adapters (``federation.personal``) never reach the server, so the server's
checkpoint cannot hold them; a node's ``context.state`` lives only as long as its process.
Each site therefore keeps a site-local checkpoint: after training round ``r`` it writes
``personal-r.pt`` (atomically) to its state folder and keeps the previous one; a site
resumed at round ``r + 1`` starts from the latest file of a round ``<= r``. A run killed
after the sites trained but before the server's checkpoint is then retrained from the
same personal state, so a resumed run ends where an uninterrupted one does.

The folder is ``<run folder>/sites/site-<partition>`` in simulation, or a deployed
site's ``state-dir`` from its node config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from fedgray.config import OutputConfig

State = dict[str, torch.Tensor]
_FILE = re.compile(r"^personal-(\d+)\.pt$")
KEEP = 2  # the last round's file and the one before: enough for a resume from either


def simulated_site_folder(output: OutputConfig, partition_id: int) -> Path | None:
    """The state folder of a simulated site (None when the run folder is not named)."""
    if not output.name:
        return None
    return Path(output.root) / output.name / "sites" / f"site-{partition_id}"


def _rounds(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name)))


def save_personal(folder: Path, server_round: int, state: State) -> None:
    """Write round ``server_round``'s personal adapters; drop files older than the last
    :data:`KEEP` rounds."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"personal-{server_round}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().clone() for k, v in state.items()}, tmp)
    os.replace(tmp, path)
    for old in _rounds(folder)[:-KEEP]:
        (folder / f"personal-{old}.pt").unlink(missing_ok=True)


def load_personal(folder: Path, *, upto: int | None = None) -> State:
    """The personal adapters of the latest round ``<= upto`` (any round when None);
    empty when the site has none yet (they start at identity)."""
    rounds = [r for r in _rounds(folder) if upto is None or r <= upto]
    if not rounds:
        return {}
    path = folder / f"personal-{rounds[-1]}.pt"
    return dict(torch.load(path, map_location="cpu", weights_only=True))
