"""Trimming text batches to their longest caption changes no feature and no gradient
(within float rounding), in-process and through the sealed interface, and cuts the work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedgray.backbone import SealedBackbone, load_sealed
from fedgray.backbone.encoders import TextParts
from fedgray.backbone.trim import trimmable, untrimmed
from tests.helpers import assert_close, perturbed, reduction_terms

CAPTIONS = ["a red circle", "the digit 7 in blue", "a small green star at the top left"]


def _backbone(level: str) -> SealedBackbone:
    torch.manual_seed(0)
    return load_sealed("fedgray-tiny", None, level=level)


def _randomised(backbone: SealedBackbone, method: str) -> nn.Module:
    """``method``'s modules drawn away from identity: shift, extra token and gate all act."""
    return perturbed(backbone, method, seed=1, size=0.1)


def test_bare_features_equal_open_clips_full_context_pass() -> None:
    white = _backbone("white")
    tokens = white.tokenize(CAPTIONS)
    lengths: list[int] = []
    hook = white.module.transformer.register_forward_pre_hook(
        lambda _, args: lengths.append(args[0].shape[1])
    )
    with torch.no_grad():
        trimmed = white.encode_text(tokens)
        full = white.module.encode_text(tokens)  # open_clip's own pass, all slots
    hook.remove()
    longest = int(tokens.argmax(dim=-1).max())  # end-of-text has the largest id
    assert lengths[0] == longest + 2 < tokens.shape[1]  # the caption, end-of-text, one slot
    assert_close(trimmed, full, terms=reduction_terms(white))


@pytest.mark.parametrize(("level", "method"), [("gray", "dga"), ("gray+", "lga")])
def test_adapted_features_and_input_gradients_unchanged(level: str, method: str) -> None:
    backbone = _backbone(level)  # the sealed interface: the opaque node
    model = _randomised(backbone, method)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = backbone.tokenize(CAPTIONS)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        image, text = model(pixels, tokens)
        (image @ text.T).logsumexp(-1).sum().backward()
        return text.detach(), [p.grad.clone() for p in model.text_in.parameters()]

    text, grads = run()
    with untrimmed():
        full_text, full_grads = run()
    terms = reduction_terms(backbone)
    assert_close(text, full_text, terms=terms)
    assert all(g.abs().sum() > 0 for g in grads)  # the extra token and shift do act
    for grad, full in zip(grads, full_grads, strict=True):  # summed over the captions too
        assert_close(grad, full, terms=terms * len(CAPTIONS))


def _parts(*, mask: bool, pool: str) -> TextParts:
    return TextParts(
        embedding=nn.Embedding(8, 4),
        positional=torch.zeros(6, 4),
        transformer=nn.Identity(),
        ln_final=nn.Identity(),
        projection=None,
        attn_mask=torch.zeros(6, 6) if mask else None,
        pool=pool,
        eos_id=None,
    )


def test_only_causal_towers_pooled_at_end_of_text_are_trimmed() -> None:
    assert trimmable(_parts(mask=True, pool="argmax"))
    assert not trimmable(_parts(mask=False, pool="argmax"))  # bidirectional (SigLIP)
    assert not trimmable(_parts(mask=True, pool="last"))  # the last slot reads padding
