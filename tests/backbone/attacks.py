"""Attacks on a sealed backbone, written as a hostile site would write them, and the
ground truth (the weights, reached through private closures) to judge what they got."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

Serve = Callable[..., "subprocess.Popen[str]"]  # the conftest's runtime starter
Users = Callable[..., pwd.struct_passwd]  # the conftest's throwaway users

as_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="needs root to create a second user and switch to it (CI runs as root)",
)


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


# A hostile neighbour of a served runtime: a plain Python process of another local user,
# speaking the runtime's framing by hand (no fedgray, no torch). Each mode prints one JSON
# line of what it got, then waits for a line on stdin (holding what it opened).
NEIGHBOUR = r"""
import json, socket, sys, time
path, mode, *rest = sys.argv[1:]

def frame(op, args, specs=(), data=b""):
    header = json.dumps({"schema": "fedgray-runtime", "version": 1, "op": op,
                         "args": args, "tensors": list(specs)}).encode()
    body = len(header).to_bytes(4, "big") + header + data
    return b"FGR1" + len(body).to_bytes(8, "big") + body

def exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data

def reply(sock):
    prefix = exactly(sock, 12)
    if prefix is None:
        return "closed", ""
    body = exactly(sock, int.from_bytes(prefix[4:], "big"))
    header = json.loads(body[4:4 + int.from_bytes(body[:4], "big")])
    return header["op"], header["args"].get("message", "")

def connect(timeout=30):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock

held, out = [], {}
if mode == "connect":
    try:
        sock = connect()
        out = {"got": reply(sock)[0]}
    except PermissionError:
        out = {"got": "denied"}
elif mode == "flood":
    out = {"ok": 0, "refused": 0, "failed": 0, "message": ""}
    for _ in range(int(rest[0])):
        try:
            sock = connect(10)
            op, message = reply(sock)
        except OSError:
            out["failed"] += 1
            continue
        held.append(sock)
        out["ok" if op == "ok" else "refused"] += 1
        out["message"] = message or out["message"]
elif mode == "graphs":
    batch, count, size = int(rest[0]), int(rest[1]), int(rest[2])
    sock = connect(120)
    reply(sock)
    spec = [{"name": "pixels", "dtype": "float32", "shape": [batch, 3, size, size]}]
    data = bytes(4 * batch * 3 * size * size)
    out = {"replies": []}
    for key in range(count):
        args = {"tower": "image", "key": key, "needs_grad": ["pixels"]}
        sock.sendall(frame("encode", args, spec, data))
        out["replies"].append(reply(sock))
    held.append(sock)
elif mode == "frame":
    sock = connect(30)
    reply(sock)
    sock.sendall(b"FGR1" + (1 << 30).to_bytes(8, "big"))
    sent, start = 0, time.monotonic()
    try:
        sock.settimeout(5)
        while sent < 256 << 20:
            sock.sendall(bytes(1 << 20))
            sent += 1 << 20
    except OSError:
        pass
    sock.settimeout(30)
    out = {"sent_mib": sent >> 20, "reply": reply(sock)}
    held.append(sock)
elif mode == "stall":
    idle, half = connect(), connect()
    reply(idle), reply(half)
    half.sendall(b"FGR1" + (1000).to_bytes(8, "big") + bytes(10))
    start = time.monotonic()
    out = {"idle": reply(idle)[0], "half": reply(half)[0]}
    out["after"] = [reply(idle)[0], reply(half)[0], round(time.monotonic() - start, 1)]
elif mode == "tokenize":
    sock = connect(600)
    reply(sock)
    start = time.monotonic()
    sock.sendall(frame("tokenize", {"texts": json.loads(rest[0])}))
    out = {"reply": reply(sock), "seconds": round(time.monotonic() - start, 2)}
    held.append(sock)
print(json.dumps(out), flush=True)
sys.stdin.readline()
"""


def neighbour(
    socket_path: object, mode: str, *args: str, user: str = "nobody"
) -> subprocess.Popen[str]:
    """Start :data:`NEIGHBOUR` as ``user`` (no supplementary groups) in ``mode``."""
    entry = pwd.getpwnam(user)
    return subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, str(socket_path), mode, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
