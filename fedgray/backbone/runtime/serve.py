"""The runtime's side of the channel: check each request against the published interface
and against what the connection may hold, then run it on the sealed backbone.

A request reaches the model only after its operation, arguments, tensor names, dtypes,
shapes and token ids match :class:`BackboneInterface`; anything else is answered with one
error line and changes nothing (the kept graphs, the query count). Nothing received is
ever executed.

One runtime serves every site process of a machine, so no connection may starve the
others (:class:`Limits`): a frame's size is checked before its body is read, the graphs
kept for backward passes and the requests being read count against per-connection,
per-user and total byte caps, a connection that sends half a frame or nothing at all is
closed after a timeout, and tokenization runs outside the lock the model's calls share.

What each peer user spends (calls, samples forwarded, input gradients) is counted against
the runtime's :class:`Budget` on one meter per user, kept across that user's connections:
a site that reconnects, or opens several connections, spends from the same budget.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch

from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.backbone.budget import Budget, Meter
from fedgray.backbone.runtime.wire import (
    MAX_FRAME,
    Message,
    WireError,
    decode,
    read_body,
    read_size,
    send,
)
from fedgray.backbone.sealed import BackboneInterface, SealedBackbone, charge

MAX_BATCH = 4096
MAX_TEXTS, MAX_TEXT_CHARS, MAX_WORD_CHARS = 65536, 1000, 64
MAX_REQUEST_CHARS = 1 << 18  # characters of one tokenize request: about 10 s at worst
MAX_PROMPTS = 256  # tokens per layer at an entry point
FLOATS = {
    "image": ("pixels", "prompts", "gates"),
    "text": ("shift", "token_shifts", "extra_token", "extra_gate", "prompts", "gates"),
}
MIB = 1 << 20


class LimitExceeded(SealedError):
    """A request that would take the connection (or its user, or the runtime) over a cap."""


@dataclass(frozen=True)
class Limits:
    """What a runtime lets its connections hold, so that no connection starves another.

    Bytes held are the request being read (twice its size: the frame and the tensors
    decoded from it) and the activations of the graphs kept for backward passes. Timeouts
    are in seconds; ``idle_timeout`` None keeps a quiet connection open (the child
    runtime, which serves only its own site).
    """

    connections: int = 32  # open at once, all users together
    connections_per_user: int = 8  # open at once by one peer user
    graphs: int = 8  # kept per connection for backward passes; the oldest are dropped
    connection_bytes: int = 2048 * MIB
    user_bytes: int = 4096 * MIB
    total_bytes: int = 8192 * MIB
    read_timeout: float = 60.0  # for a frame's body, once its size has arrived
    idle_timeout: float | None = 3600.0  # between requests


class Shared:
    """What the connections of one runtime share: the model's lock, the tokenizer's lock,
    the limits and what every connection and user holds against them, and each user's
    meter against the budget."""

    def __init__(self, backbone: SealedBackbone, limits: Limits, budget: Budget) -> None:
        if backbone.level is AccessLevel.WHITE:  # as in process: samples are not bounded
            budget = Budget(queries=budget.queries)
        self.backbone, self.limits, self.budget = backbone, limits, budget
        self.model_lock, self.tokenizer_lock, self._lock = (threading.Lock() for _ in range(3))
        self.connections: Counter[int] = Counter()  # by peer user id
        self.held: Counter[int] = Counter()  # bytes, by peer user id
        self.rates: dict[str, float] = {}  # largest graph bytes per sample seen, by tower
        self._meters: dict[int, Meter] = {}  # by peer user id, for the runtime's lifetime

    def meter(self, user: int) -> Meter:
        """What ``user`` has spent against the budget, over all its connections."""
        with self._lock:
            return self._meters.setdefault(user, Meter(self.budget))

    def greeting(self, user: int) -> Message:
        """What a connection of ``user`` is told first: the published interface, the
        budget and what the user has spent of it so far."""
        interface = asdict(self.backbone.interface)
        interface["level"] = self.backbone.interface.level.value
        args = {
            "interface": interface,
            "budget": self.budget.as_dict(),
            "spent": self.meter(user).spent.as_dict(),
        }
        return Message("ok", args)

    def admit(self, user: int) -> None:
        """Count a new connection of ``user``; :class:`LimitExceeded` over a cap."""
        limits = self.limits
        with self._lock:
            if self.connections[user] >= limits.connections_per_user:
                raise LimitExceeded(
                    f"user {user} has {limits.connections_per_user} connections open "
                    "(the runtime's limit per user): connection refused"
                )
            if self.connections.total() >= limits.connections:
                raise LimitExceeded(
                    f"the runtime has {limits.connections} connections open (its limit): "
                    "connection refused"
                )
            self.connections[user] += 1

    def leave(self, user: int) -> None:
        """Forget a closed connection of ``user``."""
        with self._lock:
            self.connections[user] -= 1

    def take(self, user: int, held: int, count: int, what: str) -> None:
        """Count ``count`` more bytes for a connection of ``user`` already holding
        ``held``; :class:`LimitExceeded` (nothing counted) over any of the three caps."""
        limits = self.limits
        with self._lock:
            caps = (
                ("this connection", held, limits.connection_bytes),
                (f"user {user}", self.held[user], limits.user_bytes),
                ("the runtime", self.held.total(), limits.total_bytes),
            )
            for who, now, cap in caps:
                if now + count > cap:
                    raise LimitExceeded(
                        f"{what}: {count // MIB} MiB more would take {who} over its "
                        f"{cap // MIB} MiB held (graphs awaiting backward and requests "
                        "being read); finish or drop pending backward passes, or send less"
                    )
            self.held[user] += count

    def give(self, user: int, count: int) -> None:
        """Release ``count`` bytes of ``user``."""
        with self._lock:
            self.held[user] -= count

    def observe(self, tower: str, per_sample: float) -> None:
        """Remember the largest graph bytes per sample of ``tower``, to refuse a request
        before it runs when its graph would not fit."""
        with self._lock:
            self.rates[tower] = max(self.rates.get(tower, 0.0), per_sample)


def peer_user(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (``SO_PEERCRED``;
    -1, one user for all peers, where the system has no such option)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return -1
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _expect(name: str, tensor: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if tensor.dtype != dtype or tuple(tensor.shape) != shape:
        raise WireError(
            f"{name}: expected {str(dtype).removeprefix('torch.')} {list(shape)}, "
            f"got {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
        )


def check_inputs(
    interface: BackboneInterface, tower: str, tensors: dict[str, torch.Tensor]
) -> None:
    """Raise :class:`WireError` unless ``tensors`` are inputs of ``tower`` as published."""
    main = "pixels" if tower == "image" else "tokens"
    allowed = {main, *FLOATS[tower]}
    if main not in tensors or not set(tensors) <= allowed:
        raise WireError(f"{tower} inputs are {main} and optionally {', '.join(FLOATS[tower][1:])}")
    batch = tensors[main].shape[0] if tensors[main].dim() else 0
    if not 1 <= batch <= MAX_BATCH:
        raise WireError(f"{main}: batch size must be 1 to {MAX_BATCH}")
    f32, width, size = torch.float32, interface.token_width, interface.image_size
    shapes: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {
        "pixels": (f32, (batch, 3, size, size)),
        "tokens": (torch.int64, (batch, interface.context_length)),
        "shift": (f32, (batch, width)),
        "extra_token": (f32, (batch, width)),
        "extra_gate": (f32, (batch, 1)),
    }
    if "token_shifts" in tensors:
        lead = tensors["token_shifts"].shape[1:2]
        if lead and not 1 <= lead[0] <= interface.context_length:
            raise WireError(f"token_shifts: 1 to {interface.context_length} positions")
        shapes["token_shifts"] = (f32, (batch, *lead, width))
    if "prompts" in tensors or "gates" in tensors:
        points = {p.tower: p for p in interface.entry_points}
        if tower not in points:
            family = getattr(interface, f"{tower}_family")
            raise WireError(
                f"prompts: the {tower} tower of '{interface.name}' ({family}) publishes no "
                f"entry point at level '{interface.level.value}'"
            )
        if not {"prompts", "gates"} <= set(tensors):
            raise WireError("prompts and gates go together, at the entry points published")
        point, count = points[tower], tensors["prompts"].shape[2:3]
        if count and not 1 <= count[0] <= MAX_PROMPTS:
            raise WireError(f"prompts: 1 to {MAX_PROMPTS} tokens per layer")
        shapes["prompts"] = (f32, (batch, point.layers, *count, point.width))
        shapes["gates"] = (f32, (batch, point.layers, 1))
    for name, tensor in tensors.items():
        _expect(name, tensor, *shapes[name])
    if "tokens" in tensors:
        low, high = int(tensors["tokens"].min()), int(tensors["tokens"].max())
        if low < 0 or high >= interface.vocab_size:
            raise WireError(f"tokens: ids must be 0 to {interface.vocab_size - 1}")


def check_texts(texts: object) -> list[str]:
    """``texts`` if it is a list of strings within the caps that bound tokenizing time
    (a long word costs the byte-pair tokenizer quadratic time); :class:`WireError` if not."""
    if not isinstance(texts, list) or len(texts) > MAX_TEXTS:
        raise WireError(f"texts: a list of at most {MAX_TEXTS} strings")
    for text in texts:
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            raise WireError(f"texts: strings of at most {MAX_TEXT_CHARS} characters")
        if any(len(word) > MAX_WORD_CHARS for word in text.split()):
            raise WireError(f"texts: words of at most {MAX_WORD_CHARS} characters")
    if sum(map(len, texts)) > MAX_REQUEST_CHARS:
        raise WireError(f"texts: at most {MAX_REQUEST_CHARS} characters in one request")
    return texts


def text_batches(texts: Sequence[str]) -> list[list[str]]:
    """``texts`` in runs a tokenize request may carry (counts and characters within the
    caps of :func:`check_texts`), in order; at least one run."""
    batches: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if batches[-1] and (len(batches[-1]) == MAX_TEXTS or size + len(text) > MAX_REQUEST_CHARS):
            batches.append([])
            size = 0
        batches[-1].append(text)
        size += len(text)
    return batches


def graph_bytes(output: torch.Tensor) -> int:
    """Bytes of the activations ``output``'s graph keeps for its backward pass.

    Each saved tensor that needs a gradient counts once per storage; the frozen weights
    the activations come from (which need none) are the model's, held anyway.
    """
    storages: dict[int, int] = {}
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            value = getattr(node, name)
            for tensor in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                    storage = tensor.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(storages.values()) + output.untyped_storage().nbytes()


class _Kept(NamedTuple):
    output: torch.Tensor
    names: list[str]
    wanted: list[torch.Tensor]
    size: int  # bytes counted for it


class Session:
    """One connection's requests: the graphs it keeps for backward passes, and the bytes
    it holds against the runtime's :class:`Limits`."""

    def __init__(self, shared: Shared, user: int) -> None:
        self.shared, self.backbone, self.user = shared, shared.backbone, user
        self.graphs: OrderedDict[int, _Kept] = OrderedDict()
        self.held = 0

    def take(self, count: int, what: str) -> None:
        """Hold ``count`` more bytes (:class:`LimitExceeded` over a cap)."""
        self.shared.take(self.user, self.held, count, what)
        self.held += count

    def give(self, count: int) -> None:
        """Release ``count`` bytes."""
        self.shared.give(self.user, count)
        self.held -= count

    def close(self) -> None:
        """Drop every kept graph and release what the connection held."""
        while self.graphs:
            self._drop(next(iter(self.graphs)))
        self.give(self.held)

    def handle(self, request: Message) -> Message:
        """The reply to one request (operations: tokenize, encode, backward)."""
        handler = {"tokenize": self._tokenize, "encode": self._encode, "backward": self._backward}
        if request.op not in handler:
            raise WireError(f"unknown operation {request.op[:40]!r}")
        return handler[request.op](request.args, request.tensors)

    def _tokenize(self, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Message:
        if set(args) != {"texts"} or tensors:
            raise WireError("tokenize takes args {'texts': [str, ...]} and no tensors")
        texts = check_texts(args["texts"])
        with self.shared.tokenizer_lock:  # not the model's: encoders run meanwhile
            return Message("ok", tensors={"tokens": self.backbone.tokenize(texts)})

    def _drop(self, key: int) -> None:
        self.give(self.graphs.pop(key).size)

    def _encode(self, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Message:
        tower, key, needs = args.get("tower"), args.get("key"), args.get("needs_grad")
        if set(args) != {"tower", "key", "needs_grad"} or tower not in FLOATS:
            raise WireError("encode takes args tower ('image' or 'text'), key and needs_grad")
        if type(key) is not int or not isinstance(needs, list):
            raise WireError("encode: key must be an int and needs_grad a list of names")
        check_inputs(self.backbone.interface, tower, tensors)
        if not set(needs) <= set(FLOATS[tower]) & set(tensors):
            raise WireError("needs_grad: names of float inputs of this request only")
        if needs and not self.backbone.level.gradients:
            needs = []  # black: the backbone answers without gradients anyway
        batch = tensors["pixels" if tower == "image" else "tokens"].shape[0]
        what = f"{tower} graph of {batch} samples"
        if needs:  # refused before it runs when a graph of its size would not fit
            estimate = int(batch * self.shared.rates.get(tower, 0.0))
            self.take(estimate, what)
            self.give(estimate)
        tensors = {n: t.to(self.backbone.device) for n, t in tensors.items()}
        wanted = [tensors[n].requires_grad_(True) for n in needs]
        encode = self.backbone.encode_image if tower == "image" else self.backbone.encode_text
        main = tensors.pop("pixels" if tower == "image" else "tokens")
        meter = self.shared.meter(self.user)
        with torch.set_grad_enabled(bool(needs)):  # refused here, before it runs, when over
            asked = charge(meter, self.backbone.level, main, *wanted)
        try:
            with self.shared.model_lock, torch.set_grad_enabled(bool(needs)):
                output = encode(main, **tensors)
            if needs:
                size = graph_bytes(output)
                self.shared.observe(tower, size / batch)
                self.take(size, what)  # refused: the graph is dropped with this frame
                self.graphs[key] = _Kept(output, list(needs), wanted, size)
                while len(self.graphs) > self.shared.limits.graphs:
                    self._drop(next(iter(self.graphs)))
        except Exception:
            meter.refund(asked)  # nothing went back to the site
            raise
        return Message("ok", tensors={"output": output.detach()})

    def _backward(self, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Message:
        key = args.get("key")
        if set(args) != {"key"} or type(key) is not int or set(tensors) != {"grad_output"}:
            raise WireError("backward takes args {'key': int} and the tensor grad_output")
        if key not in self.graphs:
            raise ValueError("the backward pass came too late: its graph was dropped")
        kept = self.graphs[key]
        _expect("grad_output", tensors["grad_output"], kept.output.dtype, tuple(kept.output.shape))
        self._drop(key)
        grad_output = tensors["grad_output"].to(kept.output.device)
        with self.shared.model_lock:
            grads = torch.autograd.grad(kept.output, kept.wanted, grad_output, allow_unused=True)
        return Message(
            "ok", tensors={n: g for n, g in zip(kept.names, grads, strict=True) if g is not None}
        )


def _request(sock: socket.socket, session: Session) -> Message | None:
    """Read and answer one request; None when the connection is to be closed (the peer
    said close or went away, or sent a frame it may not send: refused before it is read,
    as reading past it would mean buffering it)."""
    limits = session.shared.limits
    sock.settimeout(limits.idle_timeout)
    try:
        size = read_size(sock)
    except WireError as error:  # not a frame: drained up to the peer's pause
        return error_message(error)
    if size is None:
        return None
    try:
        if size > MAX_FRAME:
            raise WireError(f"a frame of {size} bytes; at most {MAX_FRAME}")
        session.take(2 * size, f"a request of {size} bytes")  # the body and its tensors
    except (WireError, LimitExceeded) as error:
        send(sock, error_message(error))
        return None
    try:
        sock.settimeout(limits.read_timeout)
        body = read_body(sock, size)
        if body is None:
            return None
        try:  # SealedError is an OSError too: only the socket's own errors end the loop
            request = decode(body)
            del body
            if request.op == "close":
                return None
            return session.handle(request)
        except Exception as error:  # noqa: BLE001 - one line back to the site, state intact
            return error_message(error)
    finally:
        session.give(2 * size)


def serve_connection(sock: socket.socket, shared: Shared, user: int) -> None:
    """Answer requests on ``sock`` until the peer says close, goes away, idles past the
    idle timeout or leaves a frame unfinished past the read timeout."""
    session = Session(shared, user)
    try:
        while True:
            try:
                reply = _request(sock, session)
                if reply is None:
                    return
                sock.settimeout(session.shared.limits.read_timeout)  # a peer that never reads
                send(sock, reply)
            except TimeoutError:
                timeouts = (session.shared.limits.idle_timeout, session.shared.limits.read_timeout)
                closing = WireError(
                    "the connection was idle, or a frame unfinished, past the runtime's "
                    f"timeouts ({timeouts[0]} s between requests, {timeouts[1]} s for a frame)"
                )
                send(sock, error_message(closing))
                return
    except OSError:
        return
    finally:
        session.close()


def error_message(error: BaseException) -> Message:
    """An error reply: the exception's class name and the first line of its message."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Message("error", {"kind": type(error).__name__, "message": text[:500]})
