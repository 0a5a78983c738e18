"""Attacks on the isolated runtime's channel: it executes nothing it is sent and keeps serving.

The attacker is the site's training code: it holds the ``IsolatedBackbone`` and writes raw
bytes to its socket.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedgray.backbone import SealedError, create_clip
from fedgray.backbone.loading import TOKENIZER_CACHE, get_tokenizer
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.backbone.runtime.serve import check_inputs
from fedgray.backbone.runtime.wire import MAGIC, Message, WireError, decode, encode, receive
from fedgray.owner.keys import KeyFiles, generate_keys
from fedgray.owner.seal import seal
from tests.helpers import close


class _Payload:
    """Unpickling this creates ``path``: proof that the runtime ran what it was sent."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsolatedBackbone]:
    root = tmp_path_factory.mktemp("channel")
    keys = generate_keys(root / "keys")
    torch.manual_seed(0)
    path = root / "micro.fgs"
    model = create_clip("fedgray-micro", None)
    seal(model, path, name="fedgray-micro", level="gray+", **_owner(keys))
    with IsolatedBackbone(path, verify_key=keys.verify_key, content_key=keys.content_key) as b:
        yield b


def _owner(keys: KeyFiles) -> dict[str, Path]:
    return {"signing_key": keys.signing_key, "content_key": keys.content_key}


def _raw(runtime: IsolatedBackbone, data: bytes) -> Message:
    """Write ``data`` to the runtime's socket as an attacker would; read the answer."""
    runtime._socket.sendall(data)
    reply = receive(runtime._socket)
    assert reply is not None
    return reply


def _framed(body: bytes) -> bytes:
    return MAGIC + len(body).to_bytes(8, "big") + body


def _header(op: str, args: dict[str, object], specs: list[dict[str, object]]) -> bytes:
    header = json.dumps(
        {"schema": "fedgray-runtime", "version": 1, "op": op, "args": args, "tensors": specs}
    ).encode()
    return len(header).to_bytes(4, "big") + header


def _pixels_spec(shape: list[int], dtype: str = "float32") -> list[dict[str, object]]:
    return [{"name": "pixels", "dtype": dtype, "shape": shape}]


def _works(runtime: IsolatedBackbone) -> None:
    with torch.no_grad():
        assert runtime.encode_image(torch.rand(2, 3, 32, 32)).shape == (2, 32)


def test_a_pickle_payload_executes_nothing(runtime: IsolatedBackbone, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    attempts = [
        len(payload).to_bytes(4, "big") + payload,  # multiprocessing's own framing
        _framed(payload),  # the runtime's framing around a pickle
        _framed(len(payload).to_bytes(4, "big") + payload),  # a pickle as the header
    ]
    for data in attempts:
        reply = _raw(runtime, data)
        assert reply.op == "error" and reply.args["kind"] == "WireError"
        assert "\n" not in reply.args["message"]
        _works(runtime)
    assert not marker.exists()
    pickle.loads(payload)  # control: the payload is live wherever it is unpickled
    assert marker.exists()


MALFORMED = {
    "unknown operation": (_header("exec", {}, []), "unknown operation 'exec'"),
    "another version": (
        _header("tokenize", {"texts": []}, []).replace(b'"version": 1', b'"version": 2'),
        "version 1",
    ),
    "wrong image size": (
        _header(
            "encode", {"tower": "image", "key": 0, "needs_grad": []}, _pixels_spec([1, 3, 33, 33])
        )
        + bytes(4 * 3 * 33 * 33),
        "pixels: expected float32 [1, 3, 32, 32]",
    ),
    "bytes missing": (
        _header(
            "encode", {"tower": "image", "key": 0, "needs_grad": []}, _pixels_spec([1, 3, 32, 32])
        )
        + bytes(10),
        "more bytes than the message holds",
    ),
    "a dtype off the wire": (
        _header(
            "encode", {"tower": "image", "key": 0, "needs_grad": []}, _pixels_spec([1], "float64")
        )
        + bytes(8),
        "dtype must be one of",
    ),
    "an input not in the interface": (
        _header(
            "encode",
            {"tower": "image", "key": 0, "needs_grad": []},
            [*_pixels_spec([1, 3, 32, 32]), {"name": "weights", "dtype": "int64", "shape": [1]}],
        )
        + bytes(4 * 3 * 32 * 32 + 8),
        "image inputs are pixels",
    ),
    "gradients of something else": (
        _header(
            "encode",
            {"tower": "image", "key": 0, "needs_grad": ["model"]},
            _pixels_spec([1, 3, 32, 32]),
        )
        + bytes(4 * 3 * 32 * 32),
        "needs_grad: names of float inputs",
    ),
    "a backward of a foreign graph": (
        _header(
            "backward",
            {"key": 10**9},
            [{"name": "grad_output", "dtype": "float32", "shape": [1, 32]}],
        )
        + bytes(128),
        "too late",
    ),
    "a token id past the vocabulary": (
        _header(
            "encode",
            {"tower": "text", "key": 0, "needs_grad": []},
            [{"name": "tokens", "dtype": "int64", "shape": [1, 16]}],
        )
        + (49408).to_bytes(8, "little") * 16,
        "tokens: ids must be 0 to 49407",
    ),
    "a word the tokenizer would take minutes over": (
        _header("tokenize", {"texts": ["a" * 900]}, []),
        "texts: words of at most 64 characters",
    ),
    "not JSON": (b"\x00\x00\x00\x05{oops", "header is not JSON"),
    "junk": (b"\x00" * 3, "shorter than its header length"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_message_is_refused_with_one_line(runtime: IsolatedBackbone, case: str) -> None:
    body, message = MALFORMED[case]
    reply = _raw(runtime, _framed(body))
    assert reply.op == "error" and message in reply.args["message"]
    assert "\n" not in reply.args["message"]
    _works(runtime)


def test_malformed_messages_leave_a_pending_backward_intact(runtime: IsolatedBackbone) -> None:
    torch.manual_seed(3)
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    expected_out = runtime.encode_image(pixels)
    expected_out.sum().backward()
    expected = pixels.grad.clone()
    pixels.grad = None
    out = runtime.encode_image(pixels)  # the runtime now keeps this call's graph
    for body, _ in MALFORMED.values():
        assert _raw(runtime, _framed(body)).op == "error"
    _raw(runtime, b"garbage that is not a frame at all")
    out.sum().backward()
    assert torch.equal(out, expected_out) and torch.equal(pixels.grad, expected)


def test_copying_and_pickling_are_refused_and_leave_it_working(
    runtime: IsolatedBackbone,
) -> None:
    for attempt in (copy.deepcopy, copy.copy, pickle.dumps, lambda b: torch.save(b, io.BytesIO())):
        with pytest.raises(
            SealedError, match="isolated backbone 'fedgray-micro': (copying|pickling)"
        ):
            attempt(runtime)
    _works(runtime)
    assert runtime.tokenize(["a red circle"]).shape == (1, 16)


def test_the_wire_round_trips_tensors_exactly() -> None:
    tensors = {"a": torch.randn(2, 3), "b": torch.arange(5), "c": torch.empty(0, 4)}
    back = decode(encode(Message("ok", {"x": [1, "y"]}, tensors)))
    assert back.op == "ok" and back.args == {"x": [1, "y"]}
    assert all(torch.equal(back.tensors[n], t) for n, t in tensors.items())
    with pytest.raises(WireError, match="dtype torch.float64 is not on the wire"):
        encode(Message("ok", tensors={"d": torch.zeros(1, dtype=torch.float64)}))


def test_token_shifts_cross_the_channel_within_the_context_length(
    runtime: IsolatedBackbone,
) -> None:
    """CraFT's context-token input: zero shifts are the bare text, others move it; more
    positions than the context length are refused with one line."""
    tokens = runtime.tokenize(["a photo of a red circle", "a photo of a digit"])
    width, length = runtime.interface.token_width, runtime.interface.context_length
    with torch.no_grad():
        bare = runtime.encode_text(tokens)
        zero = runtime.encode_text(tokens, token_shifts=torch.zeros(2, 5, width))
        # not a constant shift: the layer norm takes a vector's mean out, and ones are one
        shifts = torch.randn(2, 5, width, generator=torch.Generator().manual_seed(0))
        moved = runtime.encode_text(tokens, token_shifts=shifts)
    terms = width * length  # shifts run the full context, the bare pass a trimmed one
    assert close(zero, bare, terms=terms) and not close(moved, bare, terms=terms)
    too_long = {"tokens": tokens, "token_shifts": torch.zeros(2, length + 1, width)}
    with pytest.raises(WireError, match=f"token_shifts: 1 to {length} positions"):
        check_inputs(runtime.interface, "text", too_long)


def test_the_tokenizer_cache_stays_bounded_and_right(runtime: IsolatedBackbone) -> None:
    """Kept unbounded, the byte-pair cache would hold every distinct word for good."""
    tokenizer = get_tokenizer("fedgray-micro")
    expected = tokenizer(["a photo of a red circle"])
    draw = random.Random(0)
    for _ in range(30):
        words = ("".join(draw.choices(string.ascii_lowercase, k=12)) for _ in range(1000))
        tokenizer([" ".join(words)])
    assert len(tokenizer.cache) <= TOKENIZER_CACHE + 2  # and its two special tokens
    assert torch.equal(tokenizer(["a photo of a red circle"]), expected)
    # The runtime splits a long list into requests within its caps.
    texts = [f"a photo of the digit {i % 10}" for i in range(20000)]
    tokens = runtime.tokenize(texts)
    assert tokens.shape == (20000, 16) and torch.equal(tokens[:10], runtime.tokenize(texts[:10]))
