"""The isolated runtime's message schema: versioned, length-prefixed, parsed without pickle.

Whatever arrives on the runtime's channel is data, never code: a frame is the magic
``FGR1``, an 8-byte big-endian length and a body; the body is a 4-byte header length, a
JSON header and the raw bytes of the tensors it lists, back to back::

    {"schema": "fedgray-runtime", "version": 1, "op": "encode",
     "args": {"tower": "image", "key": 3, "needs_grad": ["pixels"]},
     "tensors": [{"name": "pixels", "dtype": "float32", "shape": [8, 3, 32, 32]}]}

Only ``float32`` and ``int64`` tensors exist on the wire. Anything that does not parse
exactly is a :class:`WireError`, one line; bytes that are not a frame are discarded up
to the sender's next pause, so that the next message is understood.
"""

from __future__ import annotations

import json
import math
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import torch

SCHEMA, VERSION = "fedgray-runtime", 1
MAGIC = b"FGR1"  # starts every frame
DRAIN_PAUSE = 0.2  # seconds of silence that end a malformed frame
MAX_FRAME = 1 << 30  # bytes of one message (a batch of 1,000 ViT-B/32 images is 0.6 GiB)
MAX_HEADER = 1 << 20
DTYPES = {"float32": torch.float32, "int64": torch.int64}
_NAMES = {v: k for k, v in DTYPES.items()}
_NAME = re.compile(r"[a-z_]{1,32}")
_HEADER_KEYS = {"schema", "version", "op", "args", "tensors"}


class WireError(ValueError):
    """A message that does not follow the runtime's schema."""


@dataclass
class Message:
    """One request or reply: an operation, JSON arguments and named tensors."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def encode(message: Message) -> bytes:
    """The body of ``message`` (tensors copied out as raw bytes, CPU, contiguous)."""
    specs, chunks = [], []
    for name, tensor in message.tensors.items():
        if tensor.dtype not in _NAMES:
            raise WireError(f"{name}: dtype {tensor.dtype} is not on the wire (float32, int64)")
        data = tensor.detach().cpu().contiguous()
        specs.append({"name": name, "dtype": _NAMES[data.dtype], "shape": list(data.shape)})
        chunks.append(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    header = json.dumps(
        {
            "schema": SCHEMA,
            "version": VERSION,
            "op": message.op,
            "args": message.args,
            "tensors": specs,
        },
        separators=(",", ":"),
    ).encode()
    return len(header).to_bytes(4, "big") + header + b"".join(chunks)


def _spec(raw: object) -> tuple[str, torch.dtype, tuple[int, ...]]:
    if not isinstance(raw, dict) or set(raw) != {"name", "dtype", "shape"}:
        raise WireError("a tensor entry needs exactly name, dtype and shape")
    name, dtype, shape = raw["name"], raw["dtype"], raw["shape"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise WireError("a tensor name must be 1-32 lowercase letters or underscores")
    if dtype not in DTYPES:
        raise WireError(f"{name}: dtype must be one of {', '.join(DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(type(d) is int and 0 <= d < 1 << 31 for d in shape)
    ):
        raise WireError(f"{name}: shape must be a list of at most 8 non-negative ints")
    return name, DTYPES[dtype], tuple(shape)


def decode(body: bytes | bytearray) -> Message:
    """Parse a body; raise :class:`WireError` unless it follows the schema exactly."""
    if len(body) < 4:
        raise WireError("message shorter than its header length")
    size = int.from_bytes(body[:4], "big")
    if size > min(MAX_HEADER, len(body) - 4):
        raise WireError("header length out of range")
    try:
        header = json.loads(body[4 : 4 + size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("header is not JSON") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise WireError(f"header needs exactly the keys {', '.join(sorted(_HEADER_KEYS))}")
    if header["schema"] != SCHEMA or header["version"] != VERSION:
        raise WireError(f"not {SCHEMA} version {VERSION}")
    op, args, specs = header["op"], header["args"], header["tensors"]
    if not isinstance(op, str) or not isinstance(args, dict) or not isinstance(specs, list):
        raise WireError("op must be a string, args an object and tensors a list")
    data, offset, tensors = memoryview(body)[4 + size :], 0, {}
    for name, dtype, shape in map(_spec, specs):
        count = math.prod(shape)
        length = count * torch.empty((), dtype=dtype).element_size()
        if name in tensors or offset + length > len(data):
            raise WireError(f"{name}: repeated, or more bytes than the message holds")
        chunk = bytearray(data[offset : offset + length])
        offset += length
        flat = torch.frombuffer(chunk, dtype=dtype) if count else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    if offset != len(data):
        raise WireError("the message holds bytes no tensor entry accounts for")
    return Message(op, args, tensors)


def _read_into(sock: socket.socket, buffer: bytearray) -> bool:
    """Fill ``buffer`` from ``sock``; False when the peer closed the connection first."""
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        count = sock.recv_into(view[done:], min(len(buffer) - done, 1 << 20))
        if not count:
            return False
        done += count
    return True


def _drain(sock: socket.socket) -> None:
    """Discard what the peer has sent so far (until it pauses), to find the next frame."""
    timeout = sock.gettimeout()
    sock.settimeout(DRAIN_PAUSE)
    try:
        while sock.recv(1 << 20):
            pass
    except (TimeoutError, BlockingIOError):
        pass
    finally:
        sock.settimeout(timeout)


def read_size(sock: socket.socket) -> int | None:
    """The body size the next frame announces; None when the peer closed the connection.

    Bytes that are not a frame (no magic) are discarded up to the peer's next pause, then
    refused, so that the next message is read from its start. Nothing of the body is read:
    the caller decides whether it may hold that many bytes before it reads them.
    """
    prefix = bytearray(12)
    if not _read_into(sock, prefix):
        return None
    if prefix[:4] != MAGIC:
        _drain(sock)
        raise WireError(f"not a {SCHEMA} frame")
    return int.from_bytes(prefix[4:], "big")


def read_body(sock: socket.socket, size: int) -> bytearray | None:
    """The ``size`` bytes of a frame's body; None when the peer closed the connection."""
    body = bytearray(size)
    return body if _read_into(sock, body) else None


def read_frame(sock: socket.socket) -> bytearray | None:
    """The next frame's body; None when the peer closed the connection.

    A frame over :data:`MAX_FRAME` is discarded up to the peer's next pause and refused.
    """
    size = read_size(sock)
    if size is None:
        return None
    if size > MAX_FRAME:
        _drain(sock)
        raise WireError(f"a frame of {size} bytes; at most {MAX_FRAME}")
    return read_body(sock, size)


def send(sock: socket.socket, message: Message) -> None:
    """Frame and send ``message``."""
    body = encode(message)
    sock.sendall(MAGIC + len(body).to_bytes(8, "big") + body)


def receive(sock: socket.socket) -> Message | None:
    """The next message (None at end of stream); :class:`WireError` if malformed."""
    body = read_frame(sock)
    return None if body is None else decode(body)
