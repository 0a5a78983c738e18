"""What ``train.lr`` means, in ``fedgray adapt`` and at every federated site alike.

``train.lr`` is the peak of a cosine decay over one local training call: step ``s`` of a
call of ``n`` steps trains at ``lr * (1 + cos(pi * s / n)) / 2``. ``fedgray adapt`` makes
one call of ``train.steps`` steps; a federated site makes one call of
``federation.local_steps`` steps per round (each round a fresh optimiser, as before), so
the schedule restarts every round and depends on nothing but the round's own steps (a
resumed run, even one with rounds added, trains exactly as an uninterrupted one). Until
this module, a federated site trained at the constant rate ``train.lr``.

``planned`` is the trainer's whole run (all rounds at a site), which DP-SGD calibrates
``privacy.target_epsilon`` over; ``done`` the run's steps before this call (earlier rounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedgray.config import Config


@dataclass(frozen=True)
class Schedule:
    """A local training call of ``steps`` steps, after ``done`` of the run's ``planned``."""

    steps: int
    planned: int
    done: int = 0

    @property
    def remaining(self) -> int:
        """Steps the run may still take, this call's included."""
        return max(self.steps, self.planned - self.done)

    @classmethod
    def single_site(cls, config: Config) -> Schedule:
        """``fedgray adapt``: all ``train.steps`` steps in one call."""
        return cls(config.train.steps, config.train.steps)

    @classmethod
    def federated(cls, config: Config, server_round: int) -> Schedule:
        """A site's round ``server_round`` (from 1): ``local_steps`` of its
        ``num_rounds * local_steps``."""
        fed = config.federation
        planned = fed.local_steps * fed.num_rounds
        return cls(fed.local_steps, planned, min(planned, fed.local_steps * (server_round - 1)))

    def factor(self, step: int) -> float:
        """The learning-rate factor of the call's ``step``-th step (from 0)."""
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / self.steps))
