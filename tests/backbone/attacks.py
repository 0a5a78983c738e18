"""Attacks on a sealed backbone, written as a hostile site would write them, and the
ground truth (the weights, reached through private closures) to judge what they got."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fedgray.owner.keys import KeyFiles

Serve = Callable[..., "subprocess.Popen[str]"]  # the conftest's runtime starter
# The conftest's ``serve_micro(socket, *extra)``: the micro artifact served on ``socket``.
ServeMicro = Callable[..., "subprocess.Popen[str]"]
Users = Callable[..., pwd.struct_passwd]  # the conftest's throwaway users

as_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="needs root to create a second user and switch to it (CI runs as root)",
)


def micro_arguments(micro_artifact: tuple[KeyFiles, Path], socket: Path, *extra: str) -> list[str]:
    """``fedgray runtime serve``'s arguments that serve the sealed micro artifact (the
    conftest's ``micro_artifact``) with its keys on ``socket``, then ``extra``."""
    keys, path = micro_artifact
    return [
        str(path),
        "--socket", str(socket),
        "--verify-key", str(keys.verify_key),
        "--content-key", str(keys.content_key),
        *extra,
    ]  # fmt: skip


def ground_truth(backbone: object) -> nn.Module:
    """The open_clip model inside a ``SealedBackbone``'s closures (test-only: private)."""
    seen: set[int] = set()
    stack: list[object] = [backbone._image]  # type: ignore[attr-defined]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            return obj
        for cell in getattr(obj, "__closure__", None) or ():
            stack.append(cell.cell_contents)
    raise AssertionError("no model in the closures")


def graph_tensors(output: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor an attacker reaches from ``output.grad_fn``: each node's ``_saved_*``
    attributes, ``saved_tensors``, AccumulateGrad's ``variable``, and any other attribute
    holding a tensor (or a tuple/list of tensors), and the graphs of those tensors too."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if name.startswith("__"):
                continue
            try:
                with warnings.catch_warnings():  # saved_variables: deprecated alias
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = getattr(node, name)
            except Exception:  # noqa: BLE001, S112 - some saved slots raise once freed
                continue
            values = value if isinstance(value, (tuple, list)) else (value,)
            tensors = [v for v in values if isinstance(v, torch.Tensor)]
            found += tensors
            stack += [t.grad_fn for t in tensors]
        stack += [next_node for next_node, _ in node.next_functions]
    return found


def attribute_walk(start: object, *, limit: int = 200_000) -> list[object]:
    """Everything reachable from ``start`` by attribute hops, as an attacker holding an
    output would try: every attribute of every object (``_saved_*`` and ctx fields
    included), closure cells, bound ``__self__``, ``__dict__``, the items of tuples,
    lists and dicts, and autograd's ``next_functions``. Modules, classes and functions'
    ``__globals__`` are not entered (from there every object of the process is reachable,
    which is the ``gc`` path, not an attribute path)."""
    found: list[object] = []
    seen: set[int] = set()
    stack = [start]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, str, bytes, int, float)):
            continue
        seen.add(id(obj))
        found.append(obj)
        if isinstance(obj, nn.Module | torch.Tensor):
            continue  # found: the judge looks at these
        if isinstance(obj, (tuple, list, set, frozenset)):
            stack += list(obj)
            continue
        if isinstance(obj, dict):
            stack += list(obj.values())
            continue
        stack += [cell.cell_contents for cell in getattr(obj, "__closure__", None) or ()]
        for name in dir(obj):
            if name.startswith("__") and name not in ("__self__", "__dict__", "__wrapped__"):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    stack.append(getattr(obj, name))
            except Exception:  # noqa: BLE001, S112 - freed saved slots, properties that raise
                continue
    return found


def leaked_weights(tensors: list[torch.Tensor], model: nn.Module) -> set[str]:
    """Names of ``model``'s parameters and buffers that any of ``tensors`` equals (in any
    element order: transposes and views count) or shares memory with."""
    leaked = set()
    for name, weight in [*model.named_parameters(), *model.named_buffers()]:
        if weight.numel() < 2:
            continue
        pointer = weight.untyped_storage().data_ptr()
        ordered = weight.detach().flatten().sort().values
        for t in tensors:
            if t.untyped_storage().data_ptr() == pointer or (
                t.numel() == weight.numel()
                and t.dtype == weight.dtype
                and torch.equal(t.detach().flatten().sort().values, ordered)
            ):
                leaked.add(name)
                break
    return leaked


def _frame(
    op: str, args: dict[str, Any], specs: list[Any] | None = None, data: bytes = b""
) -> bytes:
    header = {"schema": "fedgray-runtime", "version": 1, "op": op, "args": args}
    raw = json.dumps({**header, "tensors": specs or []}).encode()
    body = len(raw).to_bytes(4, "big") + raw + data
    return b"FGR1" + len(body).to_bytes(8, "big") + body


def _exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _reply(sock: socket.socket) -> tuple[str, str]:
    """The next frame's operation and message, or ``("closed", "")``."""
    prefix = _exactly(sock, 12)
    body = None if prefix is None else _exactly(sock, int.from_bytes(prefix[4:], "big"))
    if body is None:
        return "closed", ""
    header = json.loads(body[4 : 4 + int.from_bytes(body[:4], "big")])
    return header["op"], str(header["args"].get("message", ""))


def _connect(path: str, timeout: float = 30) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def _flood(path: str, count: str, held: list[socket.socket]) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": 0, "refused": 0, "failed": 0, "message": ""}
    for _ in range(int(count)):
        try:
            sock = _connect(path, 10)
            op, message = _reply(sock)
        except OSError:
            out["failed"] += 1
            continue
        held.append(sock)
        out["ok" if op == "ok" else "refused"] += 1
        out["message"] = message or out["message"]
    return out


def _graphs(path: str, batch: str, count: str, held: list[socket.socket]) -> dict[str, Any]:
    """``count`` image calls needing gradients at ``batch``, never followed by backward."""
    sock = _connect(path, 120)
    held.append(sock)
    _reply(sock)
    size = int(batch)
    spec = [{"name": "pixels", "dtype": "float32", "shape": [size, 3, 32, 32]}]
    data = bytes(4 * size * 3 * 32 * 32)
    replies = []
    for key in range(int(count)):
        args = {"tower": "image", "key": key, "needs_grad": ["pixels"]}
        sock.sendall(_frame("encode", args, spec, data))
        replies.append(_reply(sock))
    return {"replies": replies}


def _big_frame(path: str, held: list[socket.socket]) -> dict[str, Any]:
    """Announce a 1 GiB frame and send as much of it as the runtime takes."""
    sock = _connect(path)
    held.append(sock)
    _reply(sock)
    sock.sendall(b"FGR1" + (1 << 30).to_bytes(8, "big"))
    sent = 0
    try:
        sock.settimeout(5)
        while sent < 256 << 20:
            sock.sendall(bytes(1 << 20))
            sent += 1 << 20
    except OSError:
        pass
    sock.settimeout(30)
    return {"sent_mib": sent >> 20, "reply": _reply(sock)}


def _stall(path: str, held: list[socket.socket]) -> dict[str, Any]:
    """One connection idle, one that sends 10 bytes of a 1,000-byte frame."""
    idle, half = _connect(path), _connect(path)
    _reply(idle), _reply(half)
    half.sendall(b"FGR1" + (1000).to_bytes(8, "big") + bytes(10))
    return {"idle": [*_reply(idle), _reply(idle)[0]], "half": [*_reply(half), _reply(half)[0]]}


def _tokenize(path: str, texts: str, held: list[socket.socket]) -> dict[str, Any]:
    sock = _connect(path, 600)
    held.append(sock)
    _reply(sock)
    start = time.monotonic()
    sock.sendall(_frame("tokenize", {"texts": json.loads(texts)}))
    return {"reply": _reply(sock), "seconds": time.monotonic() - start}


def _reach(path: str, held: list[socket.socket]) -> dict[str, Any]:
    try:
        sock = _connect(path)
    except PermissionError:
        return {"got": "denied"}
    held.append(sock)
    return {"got": _reply(sock)[0]}


ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "connect": _reach,
    "flood": _flood,
    "graphs": _graphs,
    "frame": _big_frame,
    "stall": _stall,
    "tokenize": _tokenize,
}


class Neighbour:
    """A hostile neighbour of a served runtime: a forked process switched to another
    local user (no supplementary groups) that speaks the runtime's framing by hand and
    keeps what it opened until :meth:`stop`."""

    def __init__(self, socket_path: object, attack: str, *args: str, user: str = "nobody"):
        entry = pwd.getpwnam(user)
        result, self._result = os.pipe()
        self._go, go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the neighbour
            try:
                os.setgroups([])
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
                held: list[socket.socket] = []
                try:
                    out = ATTACKS[attack](str(socket_path), *args, held)
                except Exception as error:  # noqa: BLE001 - reported to the test
                    out = {"raised": repr(error)}
                os.write(self._result, json.dumps(out).encode() + b"\n")
                os.read(self._go, 1)
            finally:
                os._exit(0)
        os.close(self._result)
        os.close(self._go)
        self._reader, self._writer = os.fdopen(result), go

    def result(self) -> dict[str, Any]:
        """What the attack got (the neighbour still holds its connections)."""
        line = self._reader.readline()
        assert line, "the neighbour died"
        out: dict[str, Any] = json.loads(line)
        assert "raised" not in out, out
        return out

    def stop(self) -> None:
        """Let the neighbour go (closing all it holds); killed if it does not."""
        os.close(self._writer)
        self._reader.close()
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
