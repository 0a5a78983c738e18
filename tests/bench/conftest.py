"""Fixtures of the bench tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def threads() -> Iterator[None]:
    """The bench sets torch's thread count; give the next tests theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
