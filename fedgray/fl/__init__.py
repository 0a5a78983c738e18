"""Federated adaptation on Flower: ClientApp/ServerApp factories over adapter updates."""

from fedgray.fl.client_app import make_client_app
from fedgray.fl.server_app import make_server_app

__all__ = ["make_client_app", "make_server_app"]
