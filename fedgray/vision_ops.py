"""Make torchvision importable next to a CPU-only torch.

The torchvision wheel on PyPI that matches torch 2.13 is a CUDA build. Next to the
CPU torch its compiled operators fail to load, and ``import torchvision`` stops with
``RuntimeError: operator torchvision::nms does not exist`` because the fake-tensor
registrations refer to operators that were never defined. open_clip and timm import
torchvision (transforms, ``ops.misc``), so they would fail too.

:func:`ensure_torchvision` imports torchvision; on exactly that error it declares the
missing operator schemas, drops the half-imported modules and imports again.
Transforms and layers then work; torchvision's compiled kernels (nms, image decoding)
stay unavailable, which fedgray never needs. Where torchvision loads normally (a CUDA
machine) this is a no-op.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

import torch

_MISSING_OP_MARKER = "operator torchvision::"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment: torch.library.Library | None = None
_lock = threading.Lock()


def _drop_torchvision_modules() -> None:
    # list() copies the keys in one C call; iterating the live dict races with imports on
    # other threads ("dictionary changed size during iteration")
    for name in [
        m for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")
    ]:
        sys.modules.pop(name, None)


def _declare_missing_schemas() -> None:
    global _fragment
    if _fragment is None:
        _fragment = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901
    for name, schema in _SCHEMAS.items():
        if not _has_schema(name):
            _fragment.define(schema)


def _has_schema(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def torchvision_kernels_missing() -> bool:
    """Return True when torchvision was imported without its compiled kernels."""
    return _fragment is not None


def ensure_torchvision() -> ModuleType:
    """Import torchvision, working around a CUDA wheel installed next to a CPU torch.

    Returns the imported ``torchvision`` module. Any error other than the missing
    operator one is raised unchanged.
    """
    with _lock:  # one thread repairs the import; the others wait for its result
        loaded = sys.modules.get("torchvision")
        if loaded is not None and hasattr(loaded, "transforms"):
            return loaded
        try:
            import torchvision
        except RuntimeError as error:
            if _MISSING_OP_MARKER not in str(error):
                raise
            _drop_torchvision_modules()
            _declare_missing_schemas()
            import torchvision
        return torchvision
