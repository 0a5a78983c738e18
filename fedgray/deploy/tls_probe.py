"""Whether the SuperLink a SuperNode is about to dial speaks TLS, asked before it starts.

A SuperNode started with ``--insecure`` against a SuperLink with TLS (or the reverse) does
not fail: Flower retries the connection forever, logging a transport error per try. One
TLS handshake that verifies nothing (it only asks whether the other side answers in TLS)
tells which mistake it is, so ``fedgray deploy supernode`` can refuse in one line before
starting anything. Certificates are still checked by Flower itself when it connects.
"""

from __future__ import annotations

import socket
import ssl

PROBE_TIMEOUT_S = 10.0


def speaks_tls(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> bool | None:
    """True if ``HOST:PORT`` completes a TLS handshake, False if it answers but not in TLS,
    None if it cannot tell (nothing listens yet, or no answer in ``timeout`` seconds)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # which protocol, not whom: Flower verifies
    context.set_alpn_protocols(["h2", "http/1.1"])
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            with context.wrap_socket(sock, server_hostname=host or None):
                return True
        except TimeoutError:
            return None
        except (ssl.SSLError, ConnectionError):
            return False


def check_transport(address: str, *, insecure: bool) -> None:
    """One line if the SuperLink at ``address`` answers in the other transport than the
    SuperNode would use; nothing if they agree or it cannot tell (Flower retries then)."""
    tls = speaks_tls(address)
    if tls is None or tls != insecure:
        return
    if insecure:
        raise ValueError(
            f"--insecure: the SuperLink at {address} speaks TLS; drop --insecure and give "
            "--credentials (the federation's CA certificate and this site's key)"
        )
    raise ValueError(
        f"--superlink {address}: it does not speak TLS (a SuperLink started with "
        "--insecure?); start both with TLS, or both with --insecure"
    )
