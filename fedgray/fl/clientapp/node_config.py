"""A deployed site's own settings, from its SuperNode's ``--node-config``.

In simulation every site cuts its partition out of one shared pool (``partition-id``,
``num-partitions``). A deployed site instead holds its data on its own disk and its own
sealed backbone, and names them locally, so the server's run config never carries a
site's paths or keys::

    flower-supernode ... --node-config 'partition-id=0 data-dir="/data/site" \
        backbone-artifact="/keys/tiny.sealed" verify-key="/keys/owner-verify.pem" \
        content-key="/keys/content.key"'

``data-dir`` is a ``folder`` dataset (see :mod:`fedgray.data.folder`): ``train/captions.csv``
and its images; the site holds out ``federation.holdout`` of it for evaluation.
``partition-id`` stays the site's number (its seeds and its epsilon ledger's name).
``state-dir`` (optional) is where the site keeps its personal adapters between rounds and
runs (:mod:`fedgray.fl.clientapp.state`); without it they live only in the node's memory.
``backbone-runtime`` (instead of the artifact and its keys) is the socket of a runtime
served under another OS user: the boundary where the site must not read the weights.
``site-name`` (optional) is how the server's log and metrics name the site (default
``site-<partition-id>``; see :mod:`fedgray.fl.common.site_names`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgray.config import Config
from fedgray.data.folder import CAPTIONS_FILE, read_captions
from fedgray.data.registry import FOLDER_PREFIX

DATA_DIR = "data-dir"
STATE_DIR = "state-dir"  # optional: where the site keeps its personal adapters between runs
SITE_NAME = "site-name"  # optional: the name the server reports the site by
RUNTIME = "backbone-runtime"  # the socket of a runtime served under another OS user
BACKBONE_KEYS = {
    "backbone-artifact": "artifact",
    "verify-key": "verify_key",
    "content-key": "content_key",
    "backbone-isolated": "isolated",
    RUNTIME: "runtime",
}
TRAIN_SPLIT = "train"


class NodeConfigError(ValueError):
    """A site's node config names a path that is missing or unreadable."""


def is_deployed(node_config: Mapping[str, Any]) -> bool:
    """Whether this node holds its own data (``data-dir``) rather than a simulated partition."""
    return DATA_DIR in node_config


def site_name(node_config: Mapping[str, Any]) -> str:
    """The name this site gives the server: ``site-name``, else ``site-<partition-id>``
    (a simulated site's partition; a deployed site without one is partition 0)."""
    if SITE_NAME in node_config:
        return str(node_config[SITE_NAME])
    return f"site-{node_config.get('partition-id', 0)}"


def check_data_dir(data_dir: Path) -> int:
    """Samples in ``data_dir``'s train split, or one line naming what is missing."""
    if not data_dir.is_dir():
        raise NodeConfigError(f"node-config {DATA_DIR}: {data_dir}: no such directory")
    table = data_dir / TRAIN_SPLIT / CAPTIONS_FILE
    if not table.is_file():
        raise NodeConfigError(f"node-config {DATA_DIR}: {table}: not found")
    try:  # the folder dataset's own reader: UTF-8, its columns, at least one row
        rows = len(read_captions(data_dir / TRAIN_SPLIT)[2])
    except ValueError as error:
        raise NodeConfigError(f"node-config {DATA_DIR}: {error}") from None
    if rows < 2:
        raise NodeConfigError(f"node-config {DATA_DIR}: {table}: needs at least 2 rows")
    return rows


def backbone_fields(node_config: Mapping[str, Any]) -> dict[str, Any]:
    """The site's own backbone, as ``backbone`` fields, each path checked: a sealed
    artifact's files (``backbone-artifact``, ``verify-key``, ``content-key``;
    ``backbone-isolated``), or ``backbone-runtime``, the Unix socket of a runtime that
    ``fedgray runtime serve`` runs under another OS user. With a runtime the site holds no
    key at all, so the two are refused together."""
    if RUNTIME in node_config:
        held = [key for key in BACKBONE_KEYS if key != RUNTIME and key in node_config]
        if held:
            raise NodeConfigError(
                f"node-config {RUNTIME}: a served runtime replaces {', '.join(held)}: the "
                "site holds neither the artifact nor its keys"
            )
        socket = Path(str(node_config[RUNTIME])).expanduser()
        if not socket.is_socket():
            raise NodeConfigError(
                f"node-config {RUNTIME}: {socket}: no runtime socket there (start "
                "`fedgray runtime serve` first)"
            )
        return {"runtime": str(socket)}
    fields: dict[str, Any] = {}
    for key, field in BACKBONE_KEYS.items():
        if key in node_config:
            value = node_config[key]
            if field != "isolated":
                value = str(Path(str(value)).expanduser())
                if not Path(value).is_file():
                    raise NodeConfigError(f"node-config {key}: {value}: not found")
            fields[field] = value
    return fields


def config_at_node(config: Config, node_config: Mapping[str, Any]) -> Config:
    """``config`` as this deployed site runs it: its data directory as the whole pool (one
    partition, no domains) and its own backbone (:func:`backbone_fields`)."""
    data_dir = Path(str(node_config[DATA_DIR])).expanduser()
    rows = check_data_dir(data_dir)
    return dataclasses.replace(
        config,
        backbone=dataclasses.replace(config.backbone, **backbone_fields(node_config)),
        data=dataclasses.replace(
            config.data, dataset=f"{FOLDER_PREFIX}{data_dir}", train_size=rows
        ),
        federation=dataclasses.replace(config.federation, partitioner="iid", domains=[]),
    )
