"""The names ``federation.select`` and ``federation.select_on`` take, and where each split's
scores are read (:mod:`fedgray.fl.serverapp.selection` chooses by them; they sit here, below
the server, so that the config's resolver can check the names without importing it)."""

from __future__ import annotations

from typing import NamedTuple

SELECTIONS = ("last", "best")  # federation.select


class SelectionSplit(NamedTuple):
    """Where ``best`` reads its scores: the key of a round's record that holds them, and
    how the run's output names that data."""

    record_key: str
    described: str


SELECTION_SPLITS = {  # federation.select_on
    "sites": SelectionSplit("federated", "the sites' held-out data"),
    "validation": SelectionSplit("validation", "the server's validation split"),
}
