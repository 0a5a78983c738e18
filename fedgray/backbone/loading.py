"""Load open_clip backbones: by name with a pretrained tag, a local checkpoint, or built in.

``pretrained`` may be
- an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``...), resolved by open_clip
  (this needs its hub, which is unreachable offline);
- a path to a local checkpoint file (a state dict saved with ``torch.save`` or
  open_clip's formats);
- ``"fedgray-world"``: the built-in owner's model, pretrained on the benchmark's source
  domain and cached under the user cache directory (see :mod:`fedgray.owner.pretrain`);
- ``None``: random initialisation (scale benchmarks).
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedgray.backbone.access import AccessLevel
from fedgray.backbone.families import Support, support
from fedgray.backbone.sealed import SealedBackbone
from fedgray.vision_ops import ensure_torchvision

BUILTIN_TAG = "fedgray-world"
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_IMPORT_LOCK = threading.Lock()


class BackboneLoadError(RuntimeError):
    """A backbone could not be created or its weights could not be loaded."""


@cache
def open_clip_module():  # noqa: ANN201 - the open_clip module
    """Import open_clip (after the torchvision workaround) with fedgray's configs registered.

    Where Hugging Face transformers is installed, open_clip imports it with itself, for
    Hugging Face text towers and CoCa's caption generation: about a second in every process
    that builds a backbone (each actor, each isolated runtime). fedgray refuses both towers
    (:mod:`fedgray.backbone.families`), so open_clip is imported with transformers hidden;
    the one part fedgray uses, the tokenizer of SigLIP-like models, imports it when built.
    """
    ensure_torchvision()
    with _IMPORT_LOCK:
        hide = "transformers" not in sys.modules and "open_clip" not in sys.modules
        if hide:
            sys.modules["transformers"] = None  # type: ignore[assignment]  # ImportError
        try:
            import open_clip
        finally:
            if hide and sys.modules.get("transformers", False) is None:
                del sys.modules["transformers"]

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


def builtin_models() -> list[str]:
    """Names of the model configs that ship with fedgray."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def _looks_like_path(pretrained: str) -> bool:
    return any(s in pretrained for s in ("/", "\\")) or Path(pretrained).suffix in {
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
        ".npz",
    }


@contextmanager
def _quiet_random_weights(*, asked: bool) -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded" warning where random weights are what
    was asked for. open_clip logs it on the root logger, whose first use also installs a
    handler on stderr; a NullHandler meanwhile keeps that from happening."""
    if not asked:
        yield
        return
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root.addFilter(keep)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeFilter(keep)
        if placeholder is not None:
            root.removeHandler(placeholder)


def create_clip(name: str, pretrained: str | Path | None) -> nn.Module:
    """Create the open_clip model ``name`` and load ``pretrained`` weights (see module doc)."""
    open_clip = open_clip_module()
    if name not in open_clip.list_models():
        raise BackboneLoadError(f"unknown open_clip model '{name}'")
    if isinstance(pretrained, Path) or (pretrained and _looks_like_path(pretrained)):
        path = Path(pretrained)
        if not path.is_file():
            raise BackboneLoadError(f"checkpoint file not found: {path}")
        pretrained = str(path)
    try:
        with _quiet_random_weights(asked=pretrained is None):
            return open_clip.create_model(name, pretrained=pretrained, require_pretrained=False)
    except Exception as error:  # noqa: BLE001 - reported as one line naming the source
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackboneLoadError(
            f"could not load weights '{pretrained}' for '{name}': {first}"
        ) from None


def _hf_tokenizer_missing(name: str, error: ImportError) -> BackboneLoadError:
    return BackboneLoadError(
        f"backbone.name: the tokenizer of '{name}' needs Hugging Face transformers "
        f"({error.name or error}); install the extra: pip install -c constraints.txt "
        "-e '.[hf-text]'"
    )


TOKENIZER_CACHE = 10_000  # words whose byte-pair split a tokenizer keeps


class BoundedCache(dict[str, str]):
    """open_clip's byte-pair cache, bounded to ``size`` words besides the ones it starts
    with (its special tokens, kept). The plain cache keeps every distinct word it is
    given: a runtime tokenizing the sites' texts would grow without end."""

    def __init__(self, initial: Mapping[str, str], size: int) -> None:
        super().__init__(initial)
        self._pinned, self._size, self._lock = len(initial), size, threading.Lock()

    def __setitem__(self, key: str, value: str) -> None:
        with self._lock:
            super().__setitem__(key, value)
            while len(self) > self._pinned + self._size:  # the oldest word not pinned goes
                del self[next(itertools.islice(self, self._pinned, None))]


def get_tokenizer(
    name: str, model_cfg: Mapping[str, Any] | None = None
) -> Callable[..., torch.Tensor]:
    """:func:`_tokenizer` with its word cache bounded (:class:`BoundedCache`)."""
    tokenizer = _tokenizer(name, model_cfg)
    cache = getattr(tokenizer, "cache", None)
    if type(cache) is dict:
        tokenizer.cache = BoundedCache(cache, TOKENIZER_CACHE)  # type: ignore[attr-defined]
    return tokenizer


def _tokenizer(
    name: str, model_cfg: Mapping[str, Any] | None = None
) -> Callable[..., torch.Tensor]:
    """open_clip's tokenizer for model ``name`` (the BPE vocabulary ships with open_clip).

    ``model_cfg`` (an artifact's signed config) is used when open_clip does not know
    ``name``, e.g. in the isolated runtime's process where test configs are not registered.
    Models with a Hugging Face tokenizer (SigLIP) need the ``hf-text`` extra.
    """
    open_clip = open_clip_module()
    try:
        if model_cfg is None or open_clip.get_model_config(name) is not None:
            tokenizer: Callable[..., torch.Tensor] = open_clip.get_tokenizer(name)
            return tokenizer
        text = model_cfg.get("text_cfg", {})
        kwargs = dict(text.get("tokenizer_kwargs") or {})
        context = int(text.get("context_length", 77))
        if text.get("hf_tokenizer_name"):
            mode = text.get("tokenizer_mode")
            return open_clip.tokenizer.HFTokenizer(
                text["hf_tokenizer_name"], context, tokenizer_mode=mode, **kwargs
            )
        return open_clip.SimpleTokenizer(context_length=context, **kwargs)
    except ImportError as error:
        raise _hf_tokenizer_missing(name, error) from None
    except OSError as error:  # the Hugging Face hub is unreachable and nothing is cached
        raise BackboneLoadError(
            f"backbone.name: the tokenizer of '{name}' could not be loaded "
            f"({str(error).strip().splitlines()[0] if str(error).strip() else error!r})"
        ) from None


def supported_backbones() -> dict[str, Support]:
    """Every open_clip model config (fedgray's included), classified by family."""
    open_clip = open_clip_module()
    return {name: support(open_clip.get_model_config(name)) for name in open_clip.list_models()}


def backbone_lines() -> list[str]:
    """One line per open_clip model: its tower families and the levels it can be sealed at."""
    lines = []
    for name, said in supported_backbones().items():
        towers = f"image {said.image}, text {said.text}"
        plus = f"gray+ ({', '.join(said.entry_towers)})"
        levels = ", ".join(plus if level == "gray+" else level for level in said.levels)
        lines.append(f"  {name:<34} {towers:<42} {levels or 'not supported: ' + str(said.problem)}")
    return lines


def load_sealed(
    name: str,
    pretrained: str | Path | None,
    *,
    level: AccessLevel | str = AccessLevel.GRAY,
    query_budget: int | None = None,
    sample_budget: int | None = None,
    gradient_budget: int | None = None,
    device: torch.device | str = "cpu",
) -> SealedBackbone:
    """Create and seal a backbone on ``device``; ``pretrained='fedgray-world'`` needs
    :func:`resolve_builtin`."""
    model = create_clip(name, pretrained)
    return SealedBackbone(
        model,
        get_tokenizer(name),
        name=name,
        level=level,
        query_budget=query_budget,
        sample_budget=sample_budget,
        gradient_budget=gradient_budget,
        device=device,
    )
