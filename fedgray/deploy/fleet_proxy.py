"""The SuperLink's public address, carrying only the Fleet API: nginx in front of it.

Flower 1.42's open-source SuperLink serves the Fleet API (SuperNodes), the Control API
(``flwr``: submit, list, stop runs, register and unregister SuperNodes) and the runtime API
(ServerApp tasks) on one port, and the Control API has no user authentication there. So
with ``--public HOST:PORT`` the SuperLink listens on loopback only and nginx, the
distribution's, listens on the public address with the SuperLink's own certificate and
passes on only requests under :data:`FLEET_PREFIX` (to the SuperLink over TLS, verified
with the federation's CA); every other path gets 403 before it reaches Flower. The
operator's ``flwr`` dials the loopback address.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fedgray.launch.processes import Processes, wait_for_port

FLEET_PREFIX = "/v1/fleet/"
PROXY_DIR = "fleet-proxy"
UPSTREAM_NAME = "localhost"  # a name in the SuperLink certificate's SANs
STARTUP_TIMEOUT_S = 30.0


class ProxyError(RuntimeError):
    """nginx is missing or refused its configuration."""


@dataclass(frozen=True)
class FleetProxy:
    """Where the proxy listens, what it forwards to, and its TLS files."""

    host: str
    port: int
    upstream: str
    cert: Path
    key: Path
    ca_cert: Path
    folder: Path


def nginx_config(proxy: FleetProxy) -> str:
    """nginx's configuration: TLS on the public address, the Fleet API's paths passed on
    unbuffered (SuperNodes long-poll), everything else refused; logs, pid and temporary
    files in the proxy's folder."""
    folder = proxy.folder
    temp = "\n".join(
        f"    {kind}_temp_path {folder / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
    access_log {folder / "access.log"};
{temp}
    underscores_in_headers on;
    client_max_body_size 0;
    server {{
        listen {proxy.host}:{proxy.port} ssl;
        ssl_certificate {proxy.cert};
        ssl_certificate_key {proxy.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location {FLEET_PREFIX} {{
            proxy_pass https://{proxy.upstream};
            proxy_ssl_trusted_certificate {proxy.ca_cert};
            proxy_ssl_verify on;
            proxy_ssl_name {UPSTREAM_NAME};
            proxy_ssl_server_name on;
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
        location / {{ return 403; }}
    }}
}}
"""


def nginx_executable() -> str:
    """nginx on PATH or in /usr/sbin (Debian's package), or one line saying how to get it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ProxyError("--public: needs nginx (Debian/Ubuntu: apt-get install nginx-light)")
    return found


def start_fleet_proxy(processes: Processes, proxy: FleetProxy) -> subprocess.Popen:
    """Write the configuration, have nginx check it (one line with its complaint), then
    start it in the foreground under ``processes``."""
    nginx = nginx_executable()
    (proxy.folder / "tmp").mkdir(parents=True, exist_ok=True)
    conf = proxy.folder / "nginx.conf"
    conf.write_text(nginx_config(proxy), encoding="utf-8")
    base = [nginx, "-p", str(proxy.folder), "-c", str(conf), "-e", str(proxy.folder / "error.log")]
    check = subprocess.run(
        [*base, "-t"], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if check.returncode != 0:
        lines = (check.stderr or check.stdout).strip().splitlines() or ["no output"]
        raise ProxyError(f"nginx refused {conf}: {lines[0]}")
    process = processes.start(
        [*base, "-g", "daemon off;"], log_file=proxy.folder / "nginx.log", cwd=proxy.folder
    )
    wait_for_port(proxy.host, proxy.port, timeout=STARTUP_TIMEOUT_S, process=process)
    return process
