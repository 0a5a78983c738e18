"""The sealed backbone enforces its access level."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from fedgray.backbone import (
    AccessLevel,
    QueryBudgetExceeded,
    SealedBackbone,
    SealedError,
    load_sealed,
)

CAPTIONS = ["a red circle", "the digit 7 in blue", "a small green star at the top left"]


@pytest.mark.parametrize(
    "attempt",
    [
        lambda b: b.parameters(),
        lambda b: b.named_parameters(),
        lambda b: b.state_dict(),
        lambda b: b.module,
        lambda b: pickle.dumps(b),
        lambda b: copy.deepcopy(b),
        lambda b: copy.copy(b),
        lambda b: torch.save(b, io.BytesIO()),
        lambda b: setattr(b, "interface", None),
    ],
)
def test_gray_refuses_every_route_to_the_weights(micro: SealedBackbone, attempt) -> None:  # noqa: ANN001
    with pytest.raises(SealedError, match="sealed at level 'gray'"):
        attempt(micro)


def test_no_public_attribute_leads_to_a_tensor_or_module(micro: SealedBackbone) -> None:
    seen: set[int] = set()

    def walk(obj: object, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        assert not isinstance(obj, (torch.Tensor, nn.Module)), f"reached {type(obj)}"
        for name in dir(obj):
            if name.startswith("__"):
                continue
            try:
                value = getattr(obj, name)
            except SealedError:
                continue
            if not callable(value) or isinstance(value, (torch.Tensor, nn.Module)):
                walk(value, depth + 1)

    walk(micro, 0)


def test_only_shapes_are_published(micro: SealedBackbone) -> None:
    interface = micro.interface
    assert (interface.image_size, interface.embed_dim, interface.context_length) == (32, 32, 16)
    assert interface.entry_points == ()
    assert interface.parameter_count > 3_000_000


def test_gray_passes_gradients_to_its_inputs(micro: SealedBackbone) -> None:
    pixels = torch.rand(3, 3, 32, 32, requires_grad=True)
    shift = torch.zeros(3, micro.interface.token_width, requires_grad=True)
    image = micro.encode_image(pixels)
    text = micro.encode_text(micro.tokenize(CAPTIONS), shift=shift)
    (image * text).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert shift.grad is not None and shift.grad.abs().sum() > 0


def test_gray_refuses_entry_points_and_gray_plus_publishes_them(micro: SealedBackbone) -> None:
    prompts = torch.zeros(1, 2, 1, 64)
    with pytest.raises(SealedError, match="entry points"):
        micro.encode_image(torch.rand(1, 3, 32, 32), prompts=prompts, gates=torch.zeros(1, 2, 1))
    plus = load_sealed("fedgray-micro", None, level="gray+")
    assert {(p.tower, p.layers, p.width) for p in plus.interface.entry_points} == {
        ("image", 2, 64),
        ("text", 2, 64),
    }
    out = plus.encode_image(torch.rand(1, 3, 32, 32), prompts=prompts, gates=torch.ones(1, 2, 1))
    assert out.shape == (1, 32)


def test_gray_budget_refuses_the_call_past_it_and_counts_every_call() -> None:
    gray = load_sealed("fedgray-micro", None, level="gray+", query_budget=3)
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    gray.encode_image(pixels).sum().backward()
    assert pixels.grad is not None
    gray.encode_text(
        gray.tokenize(CAPTIONS[:2]), extra_token=torch.zeros(2, 64), extra_gate=torch.ones(2, 1)
    )
    gray.encode_image(pixels)
    assert gray.queries_used == 3
    with pytest.raises(QueryBudgetExceeded, match="backbone.query_budget: .* of 3 calls"):
        gray.encode_image(pixels)
    with pytest.raises(QueryBudgetExceeded):
        gray.encode_text(gray.tokenize(CAPTIONS[:1]))
    assert gray.queries_used == 3


def test_black_returns_detached_outputs_and_counts_queries() -> None:
    black = load_sealed("fedgray-micro", None, level="black", query_budget=2)
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = black.encode_image(pixels)
    assert not out.requires_grad and out.grad_fn is None
    black.encode_text(black.tokenize(CAPTIONS[:2]))
    assert black.queries_used == 2
    with pytest.raises(QueryBudgetExceeded, match="query budget of 2 calls"):
        black.encode_image(pixels)
    assert black.queries_used == 2


def test_white_exposes_the_plain_module() -> None:
    white = load_sealed("fedgray-micro", None, level=AccessLevel.WHITE)
    module = white.module
    assert isinstance(module, nn.Module)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(white.encode_image(pixels), white.encode_image(pixels.clone()))
    assert sum(p.numel() for p in module.parameters()) == white.interface.parameter_count


def test_tokenize_keeps_a_free_slot_after_end_of_text(micro: SealedBackbone) -> None:
    tokens = micro.tokenize(["word " * 40])
    assert tokens.shape == (1, micro.interface.context_length)
    assert tokens[0, -1] == 0
    assert tokens.argmax(-1).item() == micro.interface.context_length - 2
