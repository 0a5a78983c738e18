"""The outputs a gray site receives carry no backbone tensor, and gradients are unchanged."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from fedgray.adapters import build_model
from fedgray.backbone import SealedBackbone, load_sealed
from tests.backbone.attacks import attribute_walk, graph_tensors, ground_truth, leaked_weights

CAPTIONS = ["a red circle", "the digit 7 in blue", "a small green star"]
LEVELS = [("gray", "dga"), ("gray+", "lga")]


def _backbone(level: str) -> SealedBackbone:
    torch.manual_seed(0)
    return load_sealed("fedgray-micro", None, level=level)


def _step(backbone: SealedBackbone, method: str) -> tuple[torch.Tensor, ...]:
    """One DGA/LGA forward on adapters moved off the identity (every gradient non-trivial)."""
    torch.manual_seed(1)
    model = build_model(backbone, method)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pixels = torch.rand(3, 3, 32, 32, requires_grad=True)
    image, text = model(pixels, backbone.tokenize(CAPTIONS))
    return image, text, pixels, *model.parameters()


@pytest.mark.parametrize(("level", "method"), LEVELS)
def test_the_grad_fn_walk_reaches_no_weight(level: str, method: str) -> None:
    backbone = _backbone(level)
    weights = ground_truth(backbone)
    image, text, *_ = _step(backbone, method)
    loss = (image @ text.T).logsumexp(-1).sum()
    assert leaked_weights(graph_tensors(loss), weights) == set()
    # Control: the same walk over a plain forward (the white level's graph) finds them.
    white = _backbone("white")
    image, text, *_ = _step(white, method)
    assert len(leaked_weights(graph_tensors(image @ text.T), ground_truth(white))) >= 12


@pytest.mark.parametrize(("level", "method"), LEVELS)
def test_outputs_and_gradients_equal_a_plain_forward(level: str, method: str) -> None:
    results = []
    for backbone in (_backbone(level), _backbone("white")):  # white: the plain graph
        image, text, *inputs = _step(backbone, method)
        (image @ text.T).logsumexp(-1).sum().backward()
        results.append([image.detach(), text.detach(), *(t.grad for t in inputs)])
    assert len(results[0]) >= 6
    for sealed, plain in zip(*results, strict=True):
        assert torch.equal(sealed, plain)


def test_no_gradient_needed_no_graph_and_eval_unchanged(micro: SealedBackbone) -> None:
    tokens = micro.tokenize(CAPTIONS)
    out = micro.encode_text(tokens)
    assert out.grad_fn is None and not out.requires_grad
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.no_grad():
        assert micro.encode_image(pixels).grad_fn is None


def test_tensor_subclasses_are_refused(micro: SealedBackbone) -> None:
    seen: list[object] = []

    class Spy(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
            seen.extend(args)
            return super().__torch_function__(func, types, args, kwargs or {})

    pixels = torch.rand(2, 3, 32, 32).as_subclass(Spy)
    with pytest.raises(TypeError, match="pixels: the sealed backbone takes plain tensors"):
        micro.encode_image(pixels)
    tensors = [s for s in seen if isinstance(s, torch.Tensor)]
    assert leaked_weights(tensors, ground_truth(micro)) == set()


def test_a_second_backward_through_a_retained_graph_gives_the_same_gradients() -> None:
    """The inner graph serves one backward; a retained outer graph's next one recomputes."""
    backbone = _backbone("gray")
    image, text, pixels, *_ = _step(backbone, "dga")
    loss = (image @ text.T).logsumexp(-1).sum()
    loss.backward(retain_graph=True)
    first = pixels.grad.clone()
    pixels.grad = None
    loss.backward()
    assert first.abs().sum() > 0 and torch.equal(pixels.grad, first)


@pytest.mark.parametrize("backward", [False, True])
def test_no_attribute_path_from_an_output_leads_to_the_model(backward: bool) -> None:
    """A node holding its call would give every weight in two hops
    (``out.grad_fn.run.__closure__``) and the inner graph (``out.grad_fn.pull``); the node
    holds a bare token."""
    backbone = _backbone("gray")
    weights = ground_truth(backbone)
    image, text, *_ = _step(backbone, "dga")
    loss = (image @ text.T).logsumexp(-1).sum()
    if backward:
        loss.backward(retain_graph=True)
    reached = attribute_walk(loss.grad_fn)
    assert len(reached) > 50  # the walk does go through the graph and the adapters
    assert not [o for o in reached if isinstance(o, nn.Module) and o is weights]
    tensors = [o for o in reached if isinstance(o, torch.Tensor)]
    assert leaked_weights(tensors, weights) == set()
    # Control: the same walk from a plain forward's output reaches the weights.
    white = _backbone("white")
    image, text, *_ = _step(white, "dga")
    reached = attribute_walk((image @ text.T).grad_fn)
    plain = [o for o in reached if isinstance(o, torch.Tensor)]
    assert len(leaked_weights(plain, ground_truth(white))) >= 12


def test_gc_still_reaches_the_model_in_process(micro: SealedBackbone) -> None:
    """The documented limit: in-process sealing guards against mistakes, not against the
    site's own code. Any object of the process, the model included, is one ``gc`` away."""
    weights = ground_truth(micro)
    micro.encode_image(torch.rand(2, 3, 32, 32, requires_grad=True))
    assert any(o is weights for o in gc.get_objects())
