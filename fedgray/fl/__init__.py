"""Federated adaptation on Flower, in rooms by role: ``clientapp/``, ``serverapp/``,
``common/`` and ``simulation/``.

Nothing is imported here: Flower loads the ServerApp and the ClientApp from two threads
of one process in simulation, and a package that imported both rooms would make each
import wait for the other (Python's import locks detect the deadlock and fail the run).
Flower reads ``FLWR_TELEMETRY_ENABLED`` when it is first imported, so it is defaulted to off
here, before any fedgray module imports Flower (set it to 1 beforehand to opt in).
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
