"""Sealed calls refuse to run while torch is instrumented; the attacks get no weight."""

from __future__ import annotations

import gc
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from fedgray.backbone import SealedBackbone, SealedError, load_sealed
from tests.backbone.attacks import ground_truth, leaked_weights

REFUSED = "does not run while torch is instrumented"


@contextmanager
def _pre_hook(loot: list[torch.Tensor]) -> Iterator[None]:
    def spy(module: torch.nn.Module, args: tuple[object, ...]) -> None:
        loot.extend(p.detach().clone() for p in module.parameters(recurse=False))

    handle = register_module_forward_pre_hook(spy)
    try:
        yield
    finally:
        handle.remove()


def _saved_tensor_hook(loot: list[torch.Tensor]) -> AbstractContextManager[None]:
    def pack(t: torch.Tensor) -> torch.Tensor:
        loot.append(t.detach().clone())
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


class _FunctionSpy(TorchFunctionMode):
    def __init__(self, loot: list[torch.Tensor]) -> None:
        super().__init__()
        self.loot = loot

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.loot += [a.detach().clone() for a in args if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


class _DispatchSpy(TorchDispatchMode):
    def __init__(self, loot: list[torch.Tensor]) -> None:
        super().__init__()
        self.loot = loot

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.loot += [a.detach().clone() for a in args if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


ATTACKS: dict[str, Callable[[list[torch.Tensor]], AbstractContextManager[object]]] = {
    "global forward pre-hook": _pre_hook,
    "saved-tensor hook": _saved_tensor_hook,
    "torch function mode": _FunctionSpy,
    "torch dispatch mode": _DispatchSpy,
}


@pytest.mark.parametrize("level", ["black", "gray", "gray+"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_instrumented_calls_are_refused_and_see_no_weight(attack: str, level: str) -> None:
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None, level=level)
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    tokens = backbone.tokenize(["a red circle", "a blue star"])
    loot: list[torch.Tensor] = []
    with ATTACKS[attack](loot):
        with pytest.raises(SealedError, match=REFUSED):
            backbone.encode_image(pixels)
        with pytest.raises(SealedError, match=REFUSED):
            backbone.encode_text(tokens)
    assert leaked_weights(loot, ground_truth(backbone)) == set()
    assert backbone.encode_image(pixels).shape == (2, 32)  # works again once it is gone


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_control_each_attack_gets_weights_from_a_plain_model(attack: str) -> None:
    torch.manual_seed(0)
    white = load_sealed("fedgray-micro", None, level="white")  # not sealed: a plain forward
    loot: list[torch.Tensor] = []
    with ATTACKS[attack](loot):
        white.encode_image(torch.rand(2, 3, 32, 32, requires_grad=True))
    assert len(leaked_weights(loot, ground_truth(white))) >= 5


def test_a_backward_pass_under_a_saved_tensor_hook_is_refused(micro: SealedBackbone) -> None:
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = micro.encode_image(pixels)  # the forward ran clean; the backward is refused
    loot: list[torch.Tensor] = []
    with _saved_tensor_hook(loot), pytest.raises(SealedError, match=REFUSED):
        out.sum().backward()
    assert leaked_weights(loot, ground_truth(micro)) == set()
    micro.encode_image(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_module_hooks_on_the_site_own_modules_are_fine(micro: SealedBackbone) -> None:
    adapter = torch.nn.Linear(32, 32)
    seen: list[torch.Tensor] = []
    adapter.register_forward_hook(lambda m, args, out: seen.append(out))
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    adapter(micro.encode_image(pixels)).sum().backward()
    assert len(seen) == 1 and pixels.grad is not None


@pytest.mark.slow
def test_a_compiler_backend_sees_no_weight_in_forward_or_backward() -> None:
    import torch._dynamo.compiled_autograd as compiled_autograd

    loot: list[torch.Tensor] = []

    def spy(graph: torch.fx.GraphModule, inputs: list[object]) -> Callable[..., object]:
        loot.extend(t for t in inputs if isinstance(t, torch.Tensor))
        loot.extend([*graph.parameters(), *graph.buffers()])
        return graph.forward

    torch.manual_seed(0)
    white = load_sealed("fedgray-micro", None, level="white")  # control: the plain model
    torch.compile(white.encode_image, backend=spy)(torch.rand(2, 3, 32, 32))
    assert len(leaked_weights(loot, ground_truth(white))) >= 12
    loot.clear()
    torch._dynamo.reset()
    torch.manual_seed(0)
    gray = load_sealed("fedgray-micro", None, level="gray")
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = torch.compile(gray.encode_image, backend=spy)(pixels)
    with compiled_autograd._enable(torch.compile(backend=spy)):
        out.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert leaked_weights(loot, ground_truth(gray)) == set()


def test_a_hook_registered_during_a_call_is_not_refused(micro: SealedBackbone) -> None:
    """The documented limit: the guard looks at a call's entry. A gc callback that
    registers a global hook once the model runs (any code of the process can) sees its
    modules; in-process sealing is a guard against mistakes, not a boundary."""
    loot: list[torch.Tensor] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def spy(module: torch.nn.Module, args: tuple[object, ...]) -> None:
        loot.extend(p.detach().clone() for p in module.parameters(recurse=False))

    def arm(phase: str, info: dict[str, int]) -> None:
        frame = sys._getframe(1)
        while frame is not None and not handles:
            if frame.f_code.co_filename.endswith(os.path.join("backbone", "families.py")):
                handles.append(register_module_forward_pre_hook(spy))
            frame = frame.f_back

    threshold = gc.get_threshold()
    gc.callbacks.append(arm)
    gc.set_threshold(1)  # a collection at nearly every allocation: one happens mid-call
    try:
        micro.encode_image(torch.rand(2, 3, 32, 32, requires_grad=True))
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(arm)
        for handle in handles:
            handle.remove()
    assert handles and leaked_weights(loot, ground_truth(micro))


def test_a_torch_library_kernel_override_is_not_refused(micro: SealedBackbone) -> None:
    """The documented limit: the guard sees modes and hooks, not the dispatcher's kernel
    table. Code of the process that registers its own kernels for matmuls and convolutions
    (``torch.library``) receives the weights they multiply, undetected."""
    loot: list[torch.Tensor] = []

    def spy(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def kernel(*args: object, **kwargs: object) -> torch.Tensor:
            loot.extend(a.detach().clone() for a in args if isinstance(a, torch.Tensor))
            with torch._C._AutoDispatchBelowAutograd():
                return op(*args, **kwargs)

        return kernel

    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():  # "overriding a previously registered kernel"
            warnings.simplefilter("ignore")
            for name in ("addmm", "mm", "convolution"):
                library.impl(name, spy(getattr(torch.ops.aten, name).default), "AutogradCPU")
        with torch.no_grad():
            micro.encode_image(torch.rand(2, 3, 32, 32))
    finally:
        library._destroy()
    leaked = leaked_weights(loot, ground_truth(micro))
    assert {"visual.conv1.weight", "visual.proj"} <= leaked and len(leaked) >= 8
    pixels = torch.rand(2, 3, 32, 32, requires_grad=True)  # torch's own kernels are back
    micro.encode_image(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
