"""The isolated backbone runtime: a sealed artifact served from its own process.

:class:`IsolatedBackbone` has the encoder API of :class:`SealedBackbone`, but the keys,
the decrypted weights and the model live only in a child process. The site's process
sends inputs (pixels or token ids, and adapter tensors) and receives outputs; when an
input needs a gradient the child keeps the autograd graph until the site's backward pass
sends the output gradient, and answers with the input gradients. Tensors travel through
``torch.multiprocessing``, which moves them into shared memory instead of copying bytes
through the pipe.

The child is a separate process, not a separate user: it protects the weights from the
site's training code, not from whoever administers the machine.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from fedgray.backbone.access import AccessLevel, QueryBudgetExceeded, SealedError
from fedgray.backbone.keys import ArtifactError
from fedgray.backbone.sealed import BackboneInterface, QueryCounted

KEPT_GRAPHS = 8  # graphs awaiting a backward pass; older ones are dropped
_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (ArtifactError, SealedError, QueryBudgetExceeded, ValueError)
}


def _serve(connection: Connection, options: dict[str, Any]) -> None:
    """The child process: open the artifact, then answer requests until told to stop."""
    from fedgray.backbone.artifact import load_artifact

    threads = options.pop("threads")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        backbone = load_artifact(**options)
    except Exception as error:  # noqa: BLE001 - sent to the site as one line
        connection.send(("error", type(error).__name__, str(error)))
        return
    connection.send(("ok", backbone.interface))
    graphs: OrderedDict[int, tuple[torch.Tensor, list[torch.Tensor]]] = OrderedDict()
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        kind = request[0]
        if kind == "close":
            return
        try:
            if kind == "tokenize":
                reply: Any = backbone.tokenize(request[1])
            elif kind == "encode":
                _, tower, key, tokens, inputs, needs_grad = request
                wanted = [inputs[n].requires_grad_(True) for n in needs_grad]
                with torch.set_grad_enabled(bool(needs_grad)):
                    if tower == "image":
                        output = backbone.encode_image(inputs.pop("pixels"), **inputs)
                    else:
                        output = backbone.encode_text(tokens, **inputs)
                if needs_grad:
                    graphs[key] = (output, wanted)
                    while len(graphs) > KEPT_GRAPHS:
                        graphs.popitem(last=False)
                reply = output.detach()
            else:  # backward
                _, key, grad_output = request
                if key not in graphs:
                    raise ValueError("the backward pass came too late: its graph was dropped")
                output, wanted = graphs.pop(key)
                reply = torch.autograd.grad(output, wanted, grad_output, allow_unused=True)
        except Exception as error:  # noqa: BLE001 - re-raised in the site's process
            connection.send(("error", type(error).__name__, str(error)))
        else:
            connection.send(("ok", reply))


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


class _Remote(torch.autograd.Function):
    """Autograd across the process boundary: forward and backward are requests."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        backbone: IsolatedBackbone,
        tower: str,
        tokens: torch.Tensor,
        names: tuple[str, ...],
        *tensors: torch.Tensor,
    ) -> torch.Tensor:
        flags = zip(names, ctx.needs_input_grad[4:], strict=True)
        needs_grad = tuple(n for n, need in flags if need)
        key = next(backbone._keys)
        inputs = {n: t.detach() for n, t in zip(names, tensors, strict=True)}
        ctx.backbone, ctx.key, ctx.names, ctx.needs_grad = backbone, key, names, needs_grad
        return backbone._call("encode", tower, key, tokens, inputs, needs_grad)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads = ctx.backbone._call("backward", ctx.key, grad_output.contiguous())
        by_name = dict(zip(ctx.needs_grad, grads, strict=True))
        return (None, None, None, None, *(by_name.get(n) for n in ctx.names))


class IsolatedBackbone(QueryCounted):
    """A sealed artifact run in a child process; the encoder API of ``SealedBackbone``."""

    def __init__(
        self,
        artifact: str | Path,
        *,
        verify_key: str | Path,
        content_key: str | Path,
        name: str | None = None,
        level: AccessLevel | str | None = None,
        query_budget: int | None = None,
        threads: int | None = None,
    ) -> None:
        context = mp.get_context("spawn")
        self._connection, child = context.Pipe()
        options = {
            "path": str(artifact),
            "verify_key": str(verify_key),
            "content_key": str(content_key),
            "name": name,
            "level": level,
            "query_budget": query_budget,
            "threads": threads,
        }
        self._process = context.Process(target=_serve, args=(child, options), daemon=True)
        with _passive_openmp():
            self._process.start()
        child.close()
        self._keys = itertools.count()
        self._queries = 0
        try:
            self.interface: BackboneInterface = self._reply()
        except Exception:
            self.close()
            raise
        self._budget = query_budget if self.level is AccessLevel.BLACK else None

    @property
    def module(self) -> torch.nn.Module:
        """Refused: the isolated runtime never hands out the model, at any level."""
        raise SealedError(
            f"the backbone '{self.interface.name}' runs in an isolated runtime: "
            "the model is not accessible (use in-process loading for white-level baselines)"
        )

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length] for ``texts`` (tokenized by the runtime)."""
        return self._call("tokenize", list(texts))

    def encode_image(self, pixels: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Image features of pixels [B, 3, S, S]; see :meth:`SealedBackbone.encode_image`."""
        return self._encode("image", None, {"pixels": pixels, **inputs})

    def encode_text(self, tokens: torch.Tensor, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Text features of token ids; see :meth:`SealedBackbone.encode_text`."""
        return self._encode("text", tokens, inputs)

    def _encode(
        self, tower: str, tokens: torch.Tensor | None, inputs: dict[str, torch.Tensor | None]
    ) -> torch.Tensor:
        self._queries += 1
        given = {n: t for n, t in inputs.items() if t is not None}
        names = tuple(given)
        grad = self.level.gradients and torch.is_grad_enabled()
        if grad and any(t.requires_grad for t in given.values()):
            return _Remote.apply(self, tower, tokens, names, *given.values())
        detached = {n: t.detach() for n, t in given.items()}
        return self._call("encode", tower, next(self._keys), tokens, detached, ())

    def _call(self, *request: Any) -> Any:
        if not self._process.is_alive():
            raise SealedError("the isolated backbone runtime is not running")
        self._connection.send(request)
        return self._reply()

    def _reply(self) -> Any:
        try:
            status, *payload = self._connection.recv()
        except EOFError:
            raise SealedError("the isolated backbone runtime stopped") from None
        if status == "error":
            kind, message = payload
            raise _ERRORS.get(kind, RuntimeError)(message)
        return payload[0]

    def close(self) -> None:
        """Stop the runtime process (also done when the site's process exits)."""
        if self._process.is_alive():
            try:
                self._connection.send(("close",))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._connection.close()

    def __enter__(self) -> IsolatedBackbone:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.interface
        return f"IsolatedBackbone({i.name!r}, level={i.level.value!r}, embed_dim={i.embed_dim})"
