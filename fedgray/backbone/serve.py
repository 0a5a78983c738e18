"""The runtime's side of the channel: check each request against the published interface,
then run it on the sealed backbone.

A request reaches the model only after its operation, arguments, tensor names, dtypes and
shapes match :class:`BackboneInterface`; anything else is answered with one error line and
changes nothing (the kept graphs, the query count). Nothing received is ever executed.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import torch

from fedgray.backbone.sealed import BackboneInterface, SealedBackbone
from fedgray.backbone.wire import Message, WireError, decode, read_frame, send

KEPT_GRAPHS = 8  # graphs awaiting a backward pass, per connection; older ones are dropped
MAX_BATCH = 4096
MAX_TEXTS, MAX_TEXT_CHARS = 65536, 10000
MAX_PROMPTS = 256  # tokens per layer at an entry point
FLOATS = {
    "image": ("pixels", "prompts", "gates"),
    "text": ("shift", "token_shifts", "extra_token", "extra_gate", "prompts", "gates"),
}


def interface_args(backbone: SealedBackbone) -> dict[str, Any]:
    """The greeting a connection gets: the published interface and the query budget."""
    interface = asdict(backbone.interface)
    interface["level"] = backbone.interface.level.value
    return {"interface": interface, "query_budget": backbone.query_budget}


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
    if "tokens" in tensors and int(tensors["tokens"].min()) < 0:
        raise WireError("tokens: ids must be non-negative")


class Session:
    """One connection's requests: the graphs it keeps for backward passes."""

    def __init__(self, backbone: SealedBackbone, lock: threading.Lock) -> None:
        self.backbone, self.lock = backbone, lock
        self.graphs: OrderedDict[int, tuple[torch.Tensor, list[str], list[torch.Tensor]]]
        self.graphs = OrderedDict()

    def handle(self, request: Message) -> Message:
        """The reply to one request (operations: tokenize, encode, backward)."""
        handler = {"tokenize": self._tokenize, "encode": self._encode, "backward": self._backward}
        if request.op not in handler:
            raise WireError(f"unknown operation {request.op[:40]!r}")
        with self.lock:
            return handler[request.op](request.args, request.tensors)

    def _tokenize(self, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Message:
        texts = args.get("texts")
        if set(args) != {"texts"} or tensors or not isinstance(texts, list):
            raise WireError("tokenize takes args {'texts': [str, ...]} and no tensors")
        if len(texts) > MAX_TEXTS or not all(
            isinstance(t, str) and len(t) <= MAX_TEXT_CHARS for t in texts
        ):
            raise WireError(f"texts: at most {MAX_TEXTS} strings of {MAX_TEXT_CHARS} characters")
        return Message("ok", tensors={"tokens": self.backbone.tokenize(texts)})

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
        tensors = {n: t.to(self.backbone.device) for n, t in tensors.items()}
        wanted = [tensors[n].requires_grad_(True) for n in needs]
        encode = self.backbone.encode_image if tower == "image" else self.backbone.encode_text
        main = tensors.pop("pixels" if tower == "image" else "tokens")
        with torch.set_grad_enabled(bool(needs)):
            output = encode(main, **tensors)
        if needs:
            self.graphs[key] = (output, list(needs), wanted)
            while len(self.graphs) > KEPT_GRAPHS:
                self.graphs.popitem(last=False)
        return Message("ok", tensors={"output": output.detach()})

    def _backward(self, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Message:
        key = args.get("key")
        if set(args) != {"key"} or type(key) is not int or set(tensors) != {"grad_output"}:
            raise WireError("backward takes args {'key': int} and the tensor grad_output")
        if key not in self.graphs:
            raise ValueError("the backward pass came too late: its graph was dropped")
        output, names, wanted = self.graphs[key]
        _expect("grad_output", tensors["grad_output"], output.dtype, tuple(output.shape))
        del self.graphs[key]
        grad_output = tensors["grad_output"].to(output.device)
        grads = torch.autograd.grad(output, wanted, grad_output, allow_unused=True)
        return Message(
            "ok", tensors={n: g for n, g in zip(names, grads, strict=True) if g is not None}
        )


def serve_connection(sock: socket.socket, backbone: SealedBackbone, lock: threading.Lock) -> None:
    """Answer requests on ``sock`` until the peer says close or goes away."""
    session = Session(backbone, lock)
    while True:
        try:
            body = read_frame(sock)
            if body is None:
                return
        except WireError as error:  # oversized: read to its end and dropped
            reply = error_message(error)
        except OSError:
            return
        else:
            try:  # SealedError is an OSError too: only the socket's own errors end the loop
                request = decode(body)
                if request.op == "close":
                    return
                reply = session.handle(request)
            except Exception as error:  # noqa: BLE001 - one line back to the site, state intact
                reply = error_message(error)
        try:
            send(sock, reply)
        except OSError:
            return


def error_message(error: BaseException) -> Message:
    """An error reply: the exception's class name and the first line of its message."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Message("error", {"kind": type(error).__name__, "message": text[:500]})
