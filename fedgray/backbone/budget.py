"""What a site may spend on the backbone, and what it has spent.

Gray access gives parts of the model away by querying it (docs/security.md measures how
much), and what bounds that is how many inputs a site may send through the model and how
many input gradients it may take back, not how many calls it makes: one call may carry
thousands of samples. A :class:`Meter` counts all three (encoder calls, samples forwarded,
samples whose input gradients may come back) against a :class:`Budget` and refuses a call
that would go over, before it runs and without counting it. In process the sealed backbone
holds the meter; a runtime holds one per peer user, kept across that user's connections.
A process that simulates several sites on one backbone (the in-process grid, a Ray actor)
runs each site's work :func:`spent_by` that site: the backbone then keeps a meter per site,
so each spends its own budget, as a deployed site with its own backbone does.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedgray.backbone.access import QueryBudgetExceeded


@dataclass(frozen=True)
class Spend:
    """Encoder calls, samples forwarded and samples with input gradients: spent or asked."""

    queries: int = 0
    samples: int = 0
    gradients: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Spend)))

    def __sub__(self, other: Spend) -> Spend:
        return Spend(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(Spend)))

    def as_dict(self) -> dict[str, int]:
        """The three counts by name (``queries``, ``samples``, ``gradients``)."""
        return asdict(self)

    @classmethod
    def parse(cls, raw: Any) -> Spend:
        """A spend from :meth:`as_dict`'s form; ``TypeError``/``ValueError`` if not one."""
        if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(Spend)}:
            raise TypeError(f"a spend needs exactly {', '.join(SPEND_KEYS)}")
        return cls(**{k: _count(v) for k, v in raw.items()})


SPEND_KEYS = tuple(f.name for f in fields(Spend))


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def call(batch: int, *, gradients: bool) -> Spend:
    """What one encoder call of ``batch`` samples spends (with its input gradients or not)."""
    return Spend(1, batch, batch if gradients else 0)


@dataclass(frozen=True)
class Budget:
    """The most a site may spend (None: unlimited), each named by its config key."""

    queries: int | None = None
    samples: int | None = None
    gradients: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        """The three limits by name."""
        return asdict(self)

    @classmethod
    def parse(cls, raw: Any) -> Budget:
        """A budget from :meth:`as_dict`'s form; ``TypeError``/``ValueError`` if not one."""
        if not isinstance(raw, dict) or set(raw) != set(SPEND_KEYS):
            raise TypeError(f"a budget needs exactly {', '.join(SPEND_KEYS)}")
        return cls(**{k: None if v is None else _count(v) for k, v in raw.items()})


# What each limit is called where a site sets it, and what it counts, for the refusal line.
_WHAT = {
    "queries": ("query", "calls to the backbone"),
    "samples": ("sample", "samples forwarded"),
    "gradients": ("gradient", "samples with input gradients"),
}


class Meter:
    """A :class:`Budget` and the :class:`Spend` counted against it (thread-safe)."""

    def __init__(self, budget: Budget, spent: Spend | None = None) -> None:
        self.budget, self._spent = budget, spent or Spend()
        self._lock = threading.Lock()

    @property
    def spent(self) -> Spend:
        """What has been spent so far."""
        return self._spent

    def charge(self, asked: Spend) -> None:
        """Count ``asked``; :class:`QueryBudgetExceeded` (nothing counted) if it would take
        any count over its limit."""
        with self._lock:
            after = self._spent + asked
            for name in SPEND_KEYS:
                limit, now = getattr(self.budget, name), getattr(after, name)
                if limit is not None and getattr(asked, name) and now > limit:
                    noun, what = _WHAT[name]
                    raise QueryBudgetExceeded(
                        f"backbone.{noun}_budget: the {noun} budget of {limit:,} {what} is spent "
                        f"({getattr(self._spent, name):,} so far, {getattr(asked, name):,} "
                        "asked); refused"
                    )
            self._spent = after

    def refund(self, asked: Spend) -> None:
        """Take back a charge whose call was refused for another reason before it ran."""
        with self._lock:
            self._spent = self._spent - asked


_SITE: ContextVar[Hashable | None] = ContextVar("fedgray_backbone_site", default=None)


@contextmanager
def spent_by(site: Hashable) -> Iterator[None]:
    """Within, this thread's backbone calls charge ``site``'s own meter (see the module
    docstring); outside any, a backbone charges the meter it was opened with."""
    token = _SITE.set(site)
    try:
        yield
    finally:
        _SITE.reset(token)


def spending_site() -> Hashable | None:
    """The site this thread's backbone calls are charged to (None: the backbone's own)."""
    return _SITE.get()
