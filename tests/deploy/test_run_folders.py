"""The operator's folders and a site's first checks, without Flower running (but the
two-runs test): a SuperLink's run folder takes one SuperLink, a results name one run at a time (a
finished run's folder is never written again), a SuperNode's transport matches the
SuperLink's, and the demo goes behind nginx where it is installed."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fedgray.deploy.credentials import create_credentials
from fedgray.deploy.demo import claimed_results, fleet_proxy_available, flwr_run
from fedgray.deploy.roles import RunDirBusy, lock_run_dir
from fedgray.deploy.tls_probe import check_transport, speaks_tls
from fedgray.launch.processes import Processes
from tests.deploy.conftest import RUN_LIMIT_S, Federation, tiny_config


def test_a_results_name_is_held_by_one_submission_and_a_finished_run_is_not_reused(
    tmp_path: Path,
) -> None:
    with claimed_results(tmp_path, "r") as first, claimed_results(tmp_path, "r") as second:
        assert (first, second) == ("r", "r-2")
    with claimed_results(tmp_path, "r") as again:  # released: a stopped run resumes
        assert again == "r"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text("{}")
    with claimed_results(tmp_path, "r") as after_finish:
        assert after_finish == "r-2"


def test_a_run_folder_takes_one_superlink_and_is_free_again_once_it_ends(
    tmp_path: Path,
) -> None:
    held = lock_run_dir(tmp_path)
    os.pwrite(held, b"4242\n", 0)
    with pytest.raises(RunDirBusy, match=r"a SuperLink \(pid 4242\) runs on it already"):
        lock_run_dir(tmp_path)
    os.close(held)  # the holder ended
    os.close(lock_run_dir(tmp_path))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A TLS server and a plain one on loopback, each answering one connection at a time."""
    creds = create_credentials(tmp_path / "creds", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(creds.superlink_cert, creds.superlink_key)
    listeners = {kind: socket.create_server(("127.0.0.1", 0)) for kind in ("tls", "plain")}
    stop = threading.Event()

    def serve(kind: str, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                if kind == "tls":
                    try:
                        with context.wrap_socket(conn, server_side=True) as tls:
                            tls.recv(1)
                    except (ssl.SSLError, OSError):
                        pass
                else:  # an HTTP server that does not speak TLS
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threads = [threading.Thread(target=serve, args=item) for item in listeners.items()]
    for thread in threads:
        thread.start()
    yield {kind: f"127.0.0.1:{sock.getsockname()[1]}" for kind, sock in listeners.items()}
    stop.set()
    for thread in threads:
        thread.join()
    for sock in listeners.values():
        sock.close()


def test_the_transport_probe_tells_tls_from_plain_and_refuses_a_mismatch(
    servers: dict[str, str],
) -> None:
    assert speaks_tls(servers["tls"]) is True
    assert speaks_tls(servers["plain"]) is False
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening
    assert speaks_tls(nobody) is None
    check_transport(servers["tls"], insecure=False)
    check_transport(servers["plain"], insecure=True)
    check_transport(nobody, insecure=True)  # cannot tell: Flower retries
    with pytest.raises(ValueError, match=r"^--insecure: the SuperLink at .* speaks TLS"):
        check_transport(servers["tls"], insecure=True)
    with pytest.raises(ValueError, match=r"^--superlink .*: it does not speak TLS"):
        check_transport(servers["plain"], insecure=False)


@pytest.mark.slow
@pytest.mark.deploy
def test_two_runs_submitted_with_one_name_get_two_folders(
    federation: Federation, processes: Processes
) -> None:
    config = tiny_config("federation.num_rounds=1", "federation.secure_aggregation.enabled=false")
    run_dir = federation.link.options.run_dir

    def submit(_: int) -> Path:
        return flwr_run(
            processes, run_dir, config, echo=lambda _: None, timeout=RUN_LIMIT_S, name="same"
        )

    with ThreadPoolExecutor(2) as pool:
        folders = sorted(pool.map(submit, range(2)))
    assert folders == [run_dir / "same", run_dir / "same-2"]
    for folder in folders:
        rounds = [json.loads(line)["round"] for line in (folder / "metrics.jsonl").open()]
        assert rounds == [0, 1], folder


def test_the_demo_goes_behind_nginx_only_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said: list[str] = []
    monkeypatch.setattr("fedgray.deploy.fleet_proxy.shutil.which", lambda *_, **__: None)
    assert fleet_proxy_available(said.append) is False
    assert said == [
        "no nginx (Debian/Ubuntu: apt-get install nginx-light): the SuperNodes dial the "
        "SuperLink's own port on 127.0.0.1, which also serves its Control API"
    ]
    monkeypatch.setattr("fedgray.deploy.fleet_proxy.shutil.which", lambda *_, **__: "/nginx")
    assert fleet_proxy_available(said.append) is True
    assert len(said) == 1
