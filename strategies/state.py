"""A strategy's round-to-round state as plain arrays, for checkpoints.

The state of a Flower strategy is whatever arrays it keeps between rounds: FedAdam/FedYogi/
FedAdagrad keep ``m_t``/``v_t`` (and ``current_arrays``), FedAvgM a ``momentum_vector``;
FedAvg, FedProx, FedMedian and FedTrimmedAvg keep none. Every attribute holding arrays
(a dict of arrays, a list of arrays or an ``ArrayRecord``) is saved and restored as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

Arrays = dict[str, np.ndarray]


def _is_array_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values())


def _is_array_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value)


# kind -> (recognise, to plain arrays, back from plain arrays)
_CODECS: dict[str, tuple[Callable[[Any], bool], Callable[[Any], Arrays], Callable[[Arrays], Any]]]
_CODECS = {
    "record": (
        lambda v: isinstance(v, ArrayRecord),
        lambda v: {k: a.numpy() for k, a in v.items()},
        lambda d: ArrayRecord({k: Array(np.ascontiguousarray(a)) for k, a in d.items()}),
    ),
    "dict": (_is_array_dict, dict, dict),
    "list": (
        _is_array_list,
        lambda v: {f"{i:04d}": a for i, a in enumerate(v)},
        lambda d: [d[k] for k in sorted(d)],
    ),
}


def strategy_state(strategy: object) -> dict[str, tuple[str, Arrays]]:
    """``{attribute: (kind, arrays)}`` for every non-empty array-holding attribute."""
    state = {}
    for name, value in vars(strategy).items():
        for kind, (recognise, encode, _) in _CODECS.items():
            if recognise(value) and len(value):
                state[name] = (kind, encode(value))
                break
    return state


def restore_strategy_state(strategy: object, state: dict[str, tuple[str, Arrays]]) -> None:
    """Set the attributes saved by :func:`strategy_state` back on ``strategy``."""
    for name, (kind, arrays) in state.items():
        setattr(strategy, name, _CODECS[kind][2](arrays))
