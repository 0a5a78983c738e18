"""``fedgray runtime serve``: a runtime over a Unix socket, under its own non-dumpable user."""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest
import torch

from fedgray.adapters import build_model
from fedgray.backbone import SealedError, load_artifact
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.config import ConfigError
from fedgray.materials import open_backbone
from fedgray.owner.keys import KeyFiles
from fedgray.resolver import load_config
from tests.backbone.attacks import Serve, ServeMicro, Users, as_root
from tests.helpers import assert_close, reduction_terms

PTRACE_ATTACH, PTRACE_DETACH, PR_SET_DUMPABLE = 16, 17, 4


@pytest.mark.slow  # a served runtime and two clients
def test_a_served_runtime_answers_like_in_process(
    micro_artifact: tuple[KeyFiles, Path], serve_micro: ServeMicro, tmp_path: Path
) -> None:
    keys, path = micro_artifact
    socket_path = tmp_path / "runtime.sock"
    serve_micro(socket_path)
    local = load_artifact(path, verify_key=keys.verify_key, content_key=keys.content_key)
    first, second = IsolatedBackbone.connect(socket_path), IsolatedBackbone.connect(socket_path)
    try:
        assert first.interface == local.interface
        tokens = local.tokenize(["a red circle", "a blue star"])
        assert torch.equal(second.tokenize(["a red circle", "a blue star"]), tokens)
        grads = []
        for backbone in (local, first):
            torch.manual_seed(2)
            model = build_model(backbone, "dga")
            pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
            image, text = model(pixels, tokens)
            (image @ text.T).sum().backward()
            grads.append([image.detach(), pixels.grad, *(p.grad for p in model.parameters())])
        for expected, got in zip(*grads, strict=True):
            assert_close(got, expected, terms=reduction_terms(local))
    finally:
        first.close()
        second.close()
    # backbone.runtime connects a run to it; what it serves is the operator's choice.
    served = ["backbone.name=fedgray-micro", f"backbone.runtime={socket_path}"]
    with open_backbone(load_config(None, served), progress=False) as backbone:
        assert isinstance(backbone, IsolatedBackbone) and backbone.level.value == "gray"
    with pytest.raises(SealedError, match="backbone.level: the runtime at .* serves 'gray'"):
        open_backbone(load_config(None, [*served, "backbone.level=gray+"]), progress=False)
    with pytest.raises(ConfigError, match="backbone.runtime: a served runtime replaces"):
        load_config(None, [*served, "backbone.isolated=true"])


def _attempts(pid: int, key: Path, socket_path: Path) -> dict[str, str]:
    """What a process can do to the runtime ``pid``; the control is a dumpable process of
    its own user, which it can read and attach to (so a refusal is the runtime's doing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    ready, done = os.pipe()
    control = os.fork()
    if control == 0:  # dumpable again (switching users cleared it), then wait to be probed
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        os.write(done, b"!")
        signal.pause()
        os._exit(0)
    os.read(ready, 1)
    os.close(ready)
    os.close(done)

    def read_memory(target: int) -> str:
        try:
            with open(f"/proc/{target}/mem", "rb"):
                return "read"
        except PermissionError:
            return "denied"

    def attach(target: int) -> str:
        if libc.ptrace(PTRACE_ATTACH, target, None, None) != 0:
            return "denied"
        os.waitpid(target, 0)
        libc.ptrace(PTRACE_DETACH, target, None, None)
        return "attached"

    result = {"mem": read_memory(pid), "ptrace": attach(pid)}
    result["control"] = f"{read_memory(control)}, {attach(control)}"
    os.kill(control, signal.SIGKILL)
    os.waitpid(control, 0)
    try:
        result["key"] = "read" if key.read_bytes() else "empty"
    except PermissionError:
        result["key"] = "denied"
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(socket_path))
        result["socket"] = "answers" if client.recv(4) == b"FGR1" else "silent"
    return result


def _as_user(name: str, pid: int, key: Path, socket_path: Path) -> dict[str, str]:
    """:func:`_attempts` in a forked process switched to user ``name``."""
    entry = pwd.getpwnam(name)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.write(write, json.dumps(_attempts(pid, key, socket_path)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        output = pipe.read()
    os.waitpid(child, 0)
    return json.loads(output)


@pytest.mark.slow
@as_root
def test_no_other_process_reads_or_attaches_to_the_runtime(
    users: Users, micro_artifact: tuple[KeyFiles, Path], serve: Serve
) -> None:
    keys, path = micro_artifact
    runtime_user = users("fgray-runtime")
    site_user = users("fgray-site", group="fgray-sites")
    folder = Path(tempfile.mkdtemp(prefix="fgray-service-"))
    try:
        os.chmod(folder, 0o755)
        for source in (path, keys.verify_key, keys.content_key):
            shutil.copy(source, folder / source.name)
            os.chmod(folder / source.name, 0o644)
        key = folder / keys.content_key.name
        os.chmod(key, 0o600)  # root's: read by the runtime before it switches users
        socket_path = folder / "runtime.sock"
        runtime = serve(
            str(folder / path.name),
            "--socket", str(socket_path),
            "--verify-key", str(folder / keys.verify_key.name),
            "--content-key", str(key),
            "--user", runtime_user.pw_name,
            "--group", "fgray-sites",
        )  # fmt: skip
        status = Path(f"/proc/{runtime.pid}/status").read_text()
        assert f"Uid:\t{runtime_user.pw_uid}\t" in status
        site = _as_user(site_user.pw_name, runtime.pid, key, socket_path)
        if site["control"] != "read, attached":
            pytest.skip(f"this machine forbids ptrace even on one's own processes: {site}")
        expected = {"mem": "denied", "ptrace": "denied", "socket": "answers"}
        assert site == {**expected, "control": "read, attached", "key": "denied"}
        # Not even a process of the runtime's own user: the runtime is non-dumpable.
        same = _as_user(runtime_user.pw_name, runtime.pid, key, socket_path)
        assert same == site
        with IsolatedBackbone.connect(socket_path) as backbone:  # and it still serves
            with torch.no_grad():
                assert backbone.encode_image(torch.rand(1, 3, 32, 32)).shape == (1, 32)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
