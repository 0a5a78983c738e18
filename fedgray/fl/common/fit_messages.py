"""What fedgray puts in Flower's legacy Fit messages, the only ones SecAgg+ runs on.

Both sides read this one definition: the server writes the Fit config
(:func:`fit_config`) and reads the site's ledger back from the Fit metrics
(:func:`ledger_from_metrics`); the site reads the config and writes the metrics. Config and
metrics carry scalars only, so the adapter names, fedgray's settings and the ledger travel
as JSON strings (public accounting metadata: SecAgg+ masks only the arrays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from flwr.app import ConfigRecord

from fedgray.fl.common.private import LEDGER

ADAPTER_KEYS = "fedgray-adapter-keys"  # Fit config: the adapter names, in array order
SETTINGS = "fedgray-settings"  # Fit config: fedgray's per-round settings (JSON)
SERVER_ROUND = "server-round"


def fit_config(server_round: int, keys: list[str], settings: ConfigRecord) -> dict[str, object]:
    """The scalar Fit config that carries a round's adapter names and settings."""
    return {
        SERVER_ROUND: server_round,
        ADAPTER_KEYS: json.dumps(keys),
        SETTINGS: json.dumps(dict(settings)),
    }


def ledger_from_metrics(metrics: Mapping[str, object]) -> ConfigRecord | None:
    """The ledger a site put in its Fit metrics (None without DP-SGD)."""
    text = metrics.get(LEDGER)
    return ConfigRecord(json.loads(str(text))) if text is not None else None
