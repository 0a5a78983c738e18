"""Which round's global adapters a federated run ends with (``federation.select``).

``last``: the last round's, as FedAvg and FedBPT do. ``best``: those of the round, round 0
(the initial adapters) included, with the best value of the task's metric on
``federation.select_on``: ``sites``, the sites' held-out data as every round's federated
evaluation reports it, or ``validation``, the server's validation split (cut from the
dataset's training pool, no site's data); ties keep the earlier round. Federated CraFT
averages the sites' final search distributions with no selection and can end below its own
start; ``best`` cannot end below round 0 on that data. The test split never chooses (the
config refuses it): the figure a run reports is read on data nothing was chosen on.
Training always continues from the last round's adapters: only what the run returns, saves
and reports changes.

The sites' held-out metrics choose among adapters the sites' training already released, as
every round's reported metrics do; they are not part of the DP accounting (the validation
split holds no site's data, so choosing on it costs the sites nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord

from fedgray.config import FederationConfig
from fedgray.fl.common.records import from_record, to_record


def scores_validation(fed: FederationConfig) -> bool:
    """Whether the server scores every round on its validation split: for the curve
    (``federation.central_eval``, which never scores a round on test) or to choose on it
    (``federation.select_on: validation``)."""
    return fed.central_eval or fed.select_on == "validation"


def _better(value: float, best: float) -> bool:
    """Strictly higher (ties keep the earlier round); any number beats a missing one."""
    return value > best or (math.isnan(best) and not math.isnan(value))


@dataclass
class Selection:
    """The round chosen so far under ``rule``, scored by the federated ``metric``."""

    rule: str
    metric: str
    round: int = -1
    value: float = math.nan
    arrays: ArrayRecord | None = None

    def offer(self, server_round: int, arrays: ArrayRecord, scores: dict[str, float]) -> None:
        """Consider round ``server_round``'s global ``arrays``, scored ``scores`` on the
        selection split."""
        value = float(scores.get(self.metric, math.nan))
        if self.arrays is None or self.rule == "last" or _better(value, self.value):
            self.round, self.value, self.arrays = server_round, value, arrays

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps: the chosen round, its value and its arrays (``last``:
        nothing, the checkpoint's own arrays are the last round's)."""
        if self.rule == "last" or self.arrays is None:
            return {}
        return {"round": self.round, "value": self.value, "arrays": from_record(self.arrays)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state` (empty: nothing chosen yet)."""
        if state:
            self.round, self.value = int(state["round"]), float(state["value"])
            self.arrays = to_record(state["arrays"])
