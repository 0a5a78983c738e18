"""A served runtime against hostile neighbours: local users who can reach its socket (or
try to) and want to crash it, starve it of memory or stall the other sites' calls.

Each attacker is a plain process of another user (``nobody``) speaking the runtime's
framing by hand (:class:`tests.backbone.attacks.Neighbour`); the site is this process.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import shutil
import stat
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.owner.keys import KeyFiles
from tests.backbone.attacks import Neighbour, ServeMicro, Users, as_root, micro_arguments

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [as_root, pytest.mark.slow]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder every user may enter (the socket's own mode decides who connects)."""
    path = Path(tempfile.mkdtemp(prefix="fgray-neighbours-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _site_call(socket_path: Path) -> float:
    """Seconds one site's encode takes through the runtime (it must answer)."""
    start = time.monotonic()
    with IsolatedBackbone.connect(socket_path) as backbone, torch.no_grad():
        assert backbone.encode_image(torch.rand(2, 3, 32, 32)).shape == (2, 32)
    return time.monotonic() - start


def test_only_the_named_group_reaches_the_socket(
    users: Users, micro_artifact: tuple[KeyFiles, Path], serve_micro: ServeMicro, folder: Path
) -> None:
    socket_path = folder / "runtime.sock"
    command = [sys.executable, "-m", "fedgray.cli", "runtime", "serve"]
    open_to_all = subprocess.run(
        [*command, *micro_arguments(micro_artifact, socket_path, "--mode", "666")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert open_to_all.returncode == 2 and not socket_path.exists()
    assert open_to_all.stderr.strip().splitlines() == [
        "fedgray: error: --mode 666: a socket any local user can connect to (or not a mode); "
        "use 660 with --group naming the sites' group"
    ]
    runtime_user, site = users("fgray-runtime"), users("fgray-site", group="fgray-sites")
    serve_micro(socket_path, "--user", runtime_user.pw_name, "--group", "fgray-sites")
    status = socket_path.stat()
    assert stat.S_IMODE(status.st_mode) == 0o660
    assert (status.st_uid, status.st_gid) == (runtime_user.pw_uid, site.pw_gid)
    outsider = Neighbour(socket_path, "connect")
    member = Neighbour(socket_path, "connect", user=site.pw_name)
    try:
        assert outsider.result() == {"got": "denied"}
        assert member.result() == {"got": "ok"}
    finally:
        outsider.stop()
        member.stop()


@pytest.fixture
def runtime(serve_micro: ServeMicro, folder: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A runtime ``nobody`` may connect to (group ``nogroup``), with small limits, and an
    open-files limit of 128 (an attacker needs ~1,000 connections at the usual 1,024)."""
    socket_path = folder / "runtime.sock"
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name  # nobody may connect
    process = serve_micro(
        socket_path, "--group", group,
        "--max-mib", "256", "--connection-mib", "64",
        "--idle-timeout", "3", "--read-timeout", "3",
        files=128,
    )  # fmt: skip
    yield process, socket_path


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_connection_flood_neither_kills_nor_locks_out_other_sites(
    runtime: tuple[subprocess.Popen[str], Path],
) -> None:
    process, socket_path = runtime
    attacker = Neighbour(socket_path, "flood", "300")
    try:
        flood = attacker.result()
        assert flood["ok"] == 8 and flood["refused"] == 292  # the per-user limit
        nobody = pwd.getpwnam("nobody").pw_uid
        assert flood["message"] == (
            f"user {nobody} has 8 connections open (the runtime's limit per user): "
            "connection refused"
        )
        assert process.poll() is None
        assert _site_call(socket_path) < 10  # another user's site still gets in
    finally:
        attacker.stop()


def test_a_connection_that_idles_or_stalls_a_frame_is_closed(
    runtime: tuple[subprocess.Popen[str], Path],
) -> None:
    _, socket_path = runtime
    start = time.monotonic()
    attacker = Neighbour(socket_path, "stall")
    try:
        result = attacker.result()
    finally:
        attacker.stop()
    assert time.monotonic() - start < 30
    closing = "the connection was idle, or a frame unfinished, past the runtime's timeouts"
    for connection in ("idle", "half"):  # one closing line, then closed
        op, message, then = result[connection]
        assert op == "error" and message.startswith(closing) and then == "closed"


def test_kept_graphs_and_frames_are_capped_before_they_are_held(
    runtime: tuple[subprocess.Popen[str], Path],
) -> None:
    process, socket_path = runtime
    before = _rss_mib(process.pid)
    graphs = Neighbour(socket_path, "graphs", "256", "8")
    frame = Neighbour(socket_path, "frame")
    try:
        replies = graphs.result()["replies"]
        big = frame.result()
        held = _rss_mib(process.pid) - before
        assert isinstance(replies, list) and replies[0] == ["ok", ""]
        refused = [message for op, message in replies if op == "error"]
        assert refused and all("MiB held" in m for m in refused), replies
        reply = big["reply"]
        assert isinstance(reply, list) and reply[0] == "error" and "MiB held" in reply[1]
        assert held < 2 * 256, f"the runtime grew by {held:.0f} MiB"
        assert _site_call(socket_path) < 10
    finally:
        graphs.stop()
        frame.stop()


def test_a_long_tokenize_request_stalls_no_other_site(
    runtime: tuple[subprocess.Popen[str], Path],
) -> None:
    """Byte-pair tokenizing is quadratic in a word's length: one long word tokenized
    under the model's lock would hold it for as long as it took (27 KB: half a minute)."""
    _, socket_path = runtime
    quiet = _site_call(socket_path)
    draw = random.Random(0)
    old = json.dumps(["".join(draw.choices(string.ascii_lowercase, k=9000))] * 3)
    words = ("".join(draw.choices(string.ascii_lowercase, k=64)) for _ in range(10**9))
    worst = json.dumps([" ".join(next(words) for _ in range(15))[:1000] for _ in range(262)])
    # Two of the worst requests the caps allow queue on the tokenizer's lock, not the model's.
    attackers = [Neighbour(socket_path, "tokenize", t) for t in (old, worst, worst)]
    try:
        time.sleep(0.5)
        loaded = _site_call(socket_path)
        refused, *slow = (attacker.result() for attacker in attackers)
    finally:
        for attacker in attackers:
            attacker.stop()
    assert refused["reply"] == ["error", "texts: strings of at most 1000 characters"]
    assert all(result["reply"] == ["ok", ""] for result in slow)
    # the site was answered while the tokenizer still worked
    assert max(result["seconds"] for result in slow) > 0.5 + loaded
    assert loaded < quiet + 5, (quiet, loaded, slow["seconds"])
