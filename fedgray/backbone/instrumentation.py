"""Refuse to run the sealed model while torch is instrumented to watch it.

Torch lets code in the same process observe every operation without touching fedgray:
global module hooks receive each submodule (and so its parameters), saved-tensor hooks
receive every tensor an operation saves for backward (weights included), and torch
function or dispatch modes receive every operation's arguments. None of them is needed
to train adapters (Opacus' per-sample hooks are *module* hooks on the adapters, which
never see the backbone), so the sealed encoders refuse to run while any is active.

This raises the bar; it is not a boundary. Code in the same process can still patch
torch's functions, trace frames or read memory; the isolated runtime is the mode that
holds against the site's own code (see docs/security.md).
"""

from __future__ import annotations

import torch
import torch.nn.modules.module as _module

from fedgray.backbone.access import SealedError

# Every global hook registry of torch.nn.Module (torch 2.13); a hook in any of them sees
# the backbone's modules or their tensors as they run or are built.
_MODULE_HOOKS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_buffer_registration_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
)


def active_instrumentation() -> list[str]:
    """What is watching torch operations right now (empty when nothing is)."""
    active = [name for name in _MODULE_HOOKS if getattr(_module, name, None)]
    if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None:
        active.append("saved-tensor hooks")
    if torch._C._len_torch_function_stack() > 0:
        active.append("a torch function mode")
    if torch._C._len_torch_dispatch_stack() > 0:
        active.append("a torch dispatch mode")
    return active


def refuse_instrumentation() -> None:
    """Raise :class:`SealedError` if anything in :func:`active_instrumentation` is active."""
    active = active_instrumentation()
    if active:
        raise SealedError(
            "the sealed backbone does not run while torch is instrumented: "
            + ", ".join(name.strip("_").replace("_", " ") for name in active)
            + " active"
        )
