"""The isolated backbone runtime: a sealed artifact served from another process.

:class:`IsolatedBackbone` has the encoder API of :class:`SealedBackbone`, but the keys,
the decrypted weights and the model live only in the runtime's process: a child started
with ``spawn`` (``backbone.isolated``), or a runtime the operator started under its own
user, reached over a Unix socket (``fedgray runtime serve``, ``backbone.runtime``). The
site's process sends inputs (pixels or token ids, and adapter tensors) and receives
outputs; when an input needs a gradient the runtime keeps the autograd graph until the
site's backward pass sends the output gradient, and answers with the input gradients.

Every message follows the fixed schema of :mod:`fedgray.backbone.runtime.wire`, parsed without
pickle in both directions, and is checked against the published interface before it
reaches the model (:mod:`fedgray.backbone.runtime.serve`): the channel carries data, never code.
A child of the site's own user protects the weights from the training code, not from the
user (who can read the child's memory and the key file); a runtime under another user,
non-dumpable, holds against the site's user too (see docs/security.md).
"""

from __future__ import annotations

import faulthandler
import itertools
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.multiprocessing as mp

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.budget import Budget, Meter, Spend
from fedgray.backbone.keys import ArtifactError
from fedgray.backbone.runtime.serve import (
    LimitExceeded,
    Limits,
    Shared,
    error_message,
    peer_user,
    serve_connection,
    text_batches,
)
from fedgray.backbone.runtime.wire import Message, WireError, receive, send
from fedgray.backbone.sealed import BackboneInterface, EntryPoint, QueryCounted, charge

_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e
    for e in (
        ArtifactError,
        SealedError,
        QueryBudgetExceeded,
        LimitExceeded,
        ValueError,
        WireError,
        TypeError,
    )
}
# The child serves its own site only: no byte caps, no idle timeout (a site may wait
# between rounds); the frame and graph-count limits stay.
OWN = Limits(connection_bytes=1 << 62, user_bytes=1 << 62, total_bytes=1 << 62, idle_timeout=None)


def _serve_child(sock: socket.socket, options: dict[str, Any]) -> None:
    """The child process: open the artifact, greet, then answer until told to stop."""
    from fedgray.backbone.artifact import load_artifact

    faulthandler.enable()  # a crash of the model's native code leaves a trace on stderr
    threads, budget = options.pop("threads"), Budget.parse(options.pop("budget"))
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        backbone = load_artifact(**options, opaque=False)  # outputs leave detached
    except Exception as error:  # noqa: BLE001 - sent to the site as one line
        send(sock, error_message(error))
        return
    shared, user = Shared(backbone, OWN, budget), peer_user(sock)
    send(sock, shared.greeting(user))
    serve_connection(sock, shared, user)


_STARTING = threading.Lock()  # the environment is process-wide: one child spawns at a time


@contextmanager
def _passive_openmp() -> Iterator[None]:
    """Start the child with sleeping (not spinning) idle OpenMP threads, unless set.

    The two processes take turns; spinning threads of the idle one would steal the cores
    of the busy one.
    """
    saved = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


def _interface(args: dict[str, Any]) -> tuple[BackboneInterface, Meter]:
    """The greeting's interface, budget and spend so far, type-checked field by field."""
    try:
        raw = dict(args["interface"])
        meter = Meter(Budget.parse(args["budget"]), Spend.parse(args["spent"]))
        points = tuple(
            EntryPoint(str(p["tower"]), int(p["layers"]), int(p["width"]))
            for p in raw.pop("entry_points")
        )
        ints = (
            "image_size",
            "embed_dim",
            "context_length",
            "token_width",
            "parameter_count",
            "vocab_size",
        )
        interface = BackboneInterface(
            image_family=str(raw["image_family"]),
            text_family=str(raw["text_family"]),
            name=str(raw["name"]),
            level=AccessLevel(raw["level"]),
            logit_scale=float(raw["logit_scale"]),
            entry_points=points,
            **{k: int(raw[k]) for k in ints},
        )
        return interface, meter
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"the runtime's greeting does not parse: {error}") from None


def _on_wire(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as the wire carries it: float32 for floats (autocast's bfloat16 adapter
    outputs are cast back, differentiably), integers as they are."""
    return tensor.float() if tensor.is_floating_point() else tensor


class _Remote(torch.autograd.Function):
    """Autograd across the process boundary: forward and backward are requests."""

    @staticmethod
    def forward(
        ctx: Any,
        backbone: IsolatedBackbone,
        tower: str,
        names: tuple[str, ...],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        flags = zip(names, ctx.needs_input_grad[3:], strict=True)
        needs_grad = [n for n, need in flags if need]
        key = next(backbone._keys)
        ctx.backbone, ctx.key, ctx.names = backbone, key, names
        return backbone._encode_request(
            tower, key, dict(zip(names, tensors, strict=True)), needs_grad
        )

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        reply = ctx.backbone._call("backward", {"key": ctx.key}, {"grad_output": grad_output})
        grads = (reply.tensors.get(n) for n in ctx.names)
        return (None, None, None, *(g if g is None else g.to(grad_output.device) for g in grads))


class IsolatedBackbone(QueryCounted):
    """A sealed artifact run in another process; the encoder API of ``SealedBackbone``."""

    def __init__(
        self,
        artifact: str | Path,
        *,
        verify_key: str | Path,
        content_key: str | Path,
        name: str | None = None,
        level: AccessLevel | str | None = None,
        query_budget: int | None = None,
        sample_budget: int | None = None,
        gradient_budget: int | None = None,
        threads: int | None = None,
        device: torch.device | str = "cpu",
        min_version: int | None = None,
        revocations: str | Path | None = None,
    ) -> None:
        context = mp.get_context("spawn")
        ours, child = socket.socketpair()
        options = {
            "path": str(artifact),
            "verify_key": str(verify_key),
            "content_key": str(content_key),
            "name": name,
            "level": level,
            "budget": Budget(query_budget, sample_budget, gradient_budget).as_dict(),
            "threads": threads,
            "device": str(device),
            "min_version": min_version,
            "revocations": None if revocations is None else str(revocations),
        }
        process = context.Process(target=_serve_child, args=(child, options), daemon=True)
        with _STARTING, _passive_openmp():
            process.start()
        child.close()
        self._start(ours, process, torch.device(device))

    @classmethod
    def connect(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        level: AccessLevel | str | None = None,
        device: torch.device | str = "cpu",
    ) -> IsolatedBackbone:
        """A backbone served by ``fedgray runtime serve`` on the Unix socket ``path``;
        ``name`` and ``level``, when given, must be what the runtime serves (its operator
        chose them, and the device it runs on). Outputs arrive on ``device``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as error:
            sock.close()
            raise SealedError(f"{path}: no backbone runtime answers ({error.strerror})") from None
        backbone = cls.__new__(cls)
        backbone._start(sock, None, torch.device(device))
        served = backbone.interface
        for key, wanted, got in (("name", name, served.name), ("level", level, served.level)):
            if wanted is not None and wanted != got:
                backbone.close()
                value = getattr(got, "value", got)
                raise SealedError(f"backbone.{key}: the runtime at {path} serves '{value}'")
        return backbone

    def _start(
        self, sock: socket.socket, process: BaseProcess | None, device: torch.device
    ) -> None:
        self._socket, self._process, self.device = sock, process, device
        self._keys = itertools.count()
        self._site_meters = {}
        try:
            self.interface, self._meter = _interface(self._reply().args)
        except Exception:
            self.close()
            raise

    @property
    def module(self) -> torch.nn.Module:
        """Refused: the isolated runtime never hands out the model, at any level."""
        raise SealedError(
            f"the backbone '{self.interface.name}' runs in an isolated runtime: "
            "the model is not accessible (use in-process loading for white-level baselines)"
        )

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length] for ``texts`` (tokenized by the runtime)."""
        replies = [self._call("tokenize", {"texts": b}) for b in text_batches(texts)]
        return torch.cat([r.tensors["tokens"] for r in replies]).to(self.device)

    def encode_image(self, pixels: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Image features of pixels [B, 3, S, S]; see :meth:`SealedBackbone.encode_image`."""
        return self._encode("image", {"pixels": pixels, **inputs})

    def encode_text(self, tokens: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Text features of token ids; see :meth:`SealedBackbone.encode_text`."""
        return self._encode("text", {"tokens": tokens, **inputs})

    def _encode(self, tower: str, inputs: dict[str, torch.Tensor | None]) -> torch.Tensor:
        # The wire carries float32: autocast's bfloat16 adapter outputs are cast back.
        given = {n: _on_wire(t) for n, t in inputs.items() if t is not None}
        # Counted here as the runtime counts it (the runtime enforces it on its side), so
        # that the site can report what it spent; refused before anything is sent.
        main, *floats = given.values()
        meter = self.meter()
        asked = charge(meter, self.level, main, *floats)
        try:
            grad = self.level.gradients and torch.is_grad_enabled()
            if grad and any(t.requires_grad for t in given.values()):
                output: torch.Tensor = _Remote.apply(self, tower, tuple(given), *given.values())
                return output
            return self._encode_request(tower, next(self._keys), given, [])
        except Exception:
            meter.refund(asked)  # refused by the runtime: not spent there either
            raise

    def _encode_request(
        self, tower: str, key: int, tensors: dict[str, torch.Tensor], needs_grad: list[str]
    ) -> torch.Tensor:
        args = {"tower": tower, "key": key, "needs_grad": needs_grad}
        return self._call("encode", args, tensors).tensors["output"].to(self.device)

    def _call(
        self, op: str, args: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None
    ) -> Message:
        if self._process is not None and not self._process.is_alive():
            raise SealedError(f"the isolated backbone runtime is not running{self._exit_status()}")
        try:
            send(self._socket, Message(op, args, tensors or {}))
        except OSError:
            raise SealedError("the isolated backbone runtime stopped") from None
        return self._reply()

    def _reply(self) -> Message:
        try:
            reply = receive(self._socket)
        except OSError:
            reply = None
        if reply is None:
            raise SealedError(f"the isolated backbone runtime stopped{self._exit_status()}")
        if reply.op == "error":
            kind, message = reply.args.get("kind"), reply.args.get("message")
            raise _ERRORS.get(str(kind), RuntimeError)(str(message))
        if reply.op != "ok":
            raise WireError(f"the runtime answered with unknown operation {reply.op[:40]!r}")
        return reply

    def _exit_status(self) -> str:
        """`` (exit code N)`` once a child we started has ended: tells a crash from a kill."""
        if self._process is None:
            return ""
        self._process.join(timeout=1)
        code = self._process.exitcode
        return "" if code is None else f" (exit code {code})"

    def close(self) -> None:
        """Stop the runtime child, or leave a served runtime (also done at process exit)."""
        try:
            send(self._socket, Message("close"))
        except OSError:
            pass
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._socket.close()

    def _refuse(self, what: str) -> NoReturn:
        raise SealedError(f"the isolated backbone '{self.interface.name}': {what} not possible")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self._refuse("pickling (and torch.save) is")

    def __copy__(self) -> NoReturn:
        self._refuse("copying is (open another IsolatedBackbone)")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        self._refuse("copying is (open another IsolatedBackbone)")

    def __enter__(self) -> IsolatedBackbone:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.interface
        return f"IsolatedBackbone({i.name!r}, level={i.level.value!r}, embed_dim={i.embed_dim})"
