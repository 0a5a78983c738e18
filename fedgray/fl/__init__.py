"""Federated adaptation on Flower: ClientApp/ServerApp factories over adapter updates.

Flower reads ``FLWR_TELEMETRY_ENABLED`` when it is first imported, so it is defaulted to off
here, before any fedgray module imports Flower (set it to 1 beforehand to opt in).
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from fedgray.fl.clientapp.app import make_client_app  # noqa: E402
from fedgray.fl.serverapp.app import make_server_app  # noqa: E402

__all__ = ["make_client_app", "make_server_app"]
