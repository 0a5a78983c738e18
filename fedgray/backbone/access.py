"""Access levels of a sealed backbone and the errors that enforce them."""

from __future__ import annotations

from enum import Enum


class AccessLevel(str, Enum):  # noqa: UP042 - StrEnum would change str() and f-strings
    """What a site may do with the backbone (see the README's table)."""

    BLACK = "black"
    GRAY = "gray"
    GRAY_PLUS = "gray+"
    WHITE = "white"

    @property
    def rank(self) -> int:
        """Position in the order black < gray < gray+ < white (more access, higher rank)."""
        return list(AccessLevel).index(self)

    @property
    def gradients(self) -> bool:
        """Whether gradients flow through the backbone to its inputs."""
        return self is not AccessLevel.BLACK

    @property
    def entry_points(self) -> bool:
        """Whether learnable tokens may be injected inside the backbone's layers."""
        return self in (AccessLevel.GRAY_PLUS, AccessLevel.WHITE)


class SealedError(PermissionError):
    """An operation needs more access to the backbone than its level grants."""


class QueryBudgetExceeded(SealedError):
    """The backbone's query budget (encoder calls, at any level) is spent."""


# What each way of running a sealed backbone protects, for ``fedgray info`` (the whole
# account is docs/security.md): only another OS identity is a boundary.
SEALING_MODES = {
    "in-process (backbone.isolated: false)": "a guard against mistakes, not a boundary: "
    "the site's own code can reach the weights",
    "isolated child (backbone.isolated: true)": "a guard against mistakes, not a boundary: "
    "the child and the content key are the site user's",
    "runtime under its own user (backbone.runtime)": "the boundary against the site's "
    "code and user (not against root, nor extraction by queries)",
}
