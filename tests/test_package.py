"""What importing fedgray sets up for the processes it runs."""

from __future__ import annotations

import os
import subprocess
import sys


def test_openmp_spin_count_defaults_to_10000_and_a_users_value_wins() -> None:
    """Read in a fresh process: libgomp takes the setting when torch loads it."""
    show = "import fedgray, os; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    plain = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True)
    assert plain.stdout.strip() == "10000"
    mine = subprocess.run(
        [sys.executable, "-c", show],
        env={**env, "GOMP_SPINCOUNT": "5"},
        capture_output=True,
        text=True,
    )
    assert mine.stdout.strip() == "5"
