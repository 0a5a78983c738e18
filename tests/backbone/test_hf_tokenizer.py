"""SigLIP's Hugging Face tokenizer path, offline: a small SentencePiece-style (Unigram)
tokenizer over the world's caption words, built here with the ``tokenizers`` library and saved
as a Hugging Face tokenizer folder, stands in for ``timm/ViT-B-16-SigLIP``'s (which needs the
hub). A tiny SigLIP-layout model names that folder as its ``hf_tokenizer_name``; fedgray must
tokenize as ``AutoTokenizer`` does, seal and adapt the model and open its artifact."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fedgray.backbone import IsolatedBackbone, SealedBackbone, load_artifact
from fedgray.backbone.loading import BackboneLoadError, create_clip, get_tokenizer, open_clip_module
from fedgray.data.world import DOMAINS, caption_vocabulary
from fedgray.owner.keys import KeyFiles, generate_keys
from tests.helpers import (
    TINY_SIGLIP,
    assert_adapters_start_as_zero_shot,
    assert_gradients_reach_every_adapter,
    register_model_configs,
    seal_with_cli,
)

transformers = pytest.importorskip("transformers", reason="needs the hf-text extra (in [dev])")
tokenizers = pytest.importorskip("tokenizers")

NAME = "fgt-siglip-hf"
CONTEXT = 12
CAPTIONS = [
    "a small red circle at the top left",
    "A Large BLUE square, at the center!",  # SigLIP's 'canonicalize': lower case, no punctuation
    "the digit 7 in zebra stripes",  # unseen words fall back to letters
    "a small red circle at the top left next to a large green star at the bottom right",  # cut
]
# What open_clip's canonicalize cleaning makes of CAPTIONS (written out, not computed by it).
CLEANED = [CAPTIONS[0], "a large blue square at the center", *CAPTIONS[2:]]
SPECIALS = ["<pad>", "</s>", "<unk>"]  # T5's / SigLIP's ids 0, 1, 2; SigLIP pads with </s>


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SentencePiece-style Unigram tokenizer over the world's caption words (and single
    letters and digits for any other word), saved as a Hugging Face tokenizer folder."""
    folder = tmp_path_factory.mktemp("hf_tokenizer")
    words = {
        w for d in DOMAINS for caption in caption_vocabulary(domain=d) for w in caption.split()
    }
    pieces = [(s, 0.0) for s in SPECIALS] + [("▁", -8.0)]
    pieces += [(f"▁{w}", -4.0) for w in sorted(words)]
    pieces += [(c, -10.0) for c in string.ascii_lowercase + string.digits]
    unigram = tokenizers.models.Unigram(pieces, unk_id=SPECIALS.index("<unk>"))
    tokenizer = tokenizers.Tokenizer(unigram)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tokenizer.decoder = tokenizers.decoders.Metaspace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", SPECIALS.index("</s>"))]
    )
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def signed_cfg(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Any]:
    """The tiny SigLIP config naming the local tokenizer, registered with open_clip."""
    vocab = len(transformers.AutoTokenizer.from_pretrained(tokenizer_dir))
    text = {
        **TINY_SIGLIP["text_cfg"],
        "context_length": CONTEXT,
        "vocab_size": vocab,
        "hf_tokenizer_name": str(tokenizer_dir),
        "tokenizer_kwargs": {"clean": "canonicalize"},  # as ViT-B-16-SigLIP's config
    }
    vision = {**TINY_SIGLIP["vision_cfg"], "image_size": 32}  # 4 patches: the text is tested
    config = {**TINY_SIGLIP, "vision_cfg": vision, "text_cfg": text}
    register_model_configs(tmp_path_factory.mktemp("model_configs"), {NAME: config})
    cfg: dict[str, Any] = open_clip_module().get_model_config(NAME)
    return cfg


@pytest.fixture(scope="module")
def model(signed_cfg: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    return create_clip(NAME, None)


def _expected(tokenizer_dir: Path) -> torch.Tensor:
    """What Hugging Face's own tokenizer gives, padded and cut to the context as open_clip's
    HFTokenizer asks it to."""
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = hf(CLEANED, max_length=CONTEXT, padding="max_length", truncation=True)["input_ids"]
    return torch.tensor(ids)


def test_the_local_tokenizer_is_what_it_should_stand_in_for(tokenizer_dir: Path) -> None:
    expected = _expected(tokenizer_dir)
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (1, 1, 2)
    assert hf.convert_ids_to_tokens(expected[0, :3].tolist()) == ["▁a", "▁small", "▁red"]
    assert "▁zebra" not in hf.get_vocab() and (expected[2] > 2).sum() > 6  # spelt out
    assert (expected[:, -1] == 1).all()  # padded, or cut keeping its end-of-text
    assert (expected[0] == 1).sum() > 1 and (expected[3] != 1).sum() == CONTEXT - 1


def test_fedgray_tokenizes_as_the_hf_tokenizer(
    signed_cfg: dict[str, Any], model: nn.Module, tokenizer_dir: Path
) -> None:
    expected = _expected(tokenizer_dir)
    by_name = get_tokenizer(NAME)  # the registered config: open_clip.get_tokenizer
    assert type(by_name).__name__ == "HFTokenizer"
    assert torch.equal(by_name(CAPTIONS), expected)
    # An artifact's signed config under a name open_clip does not know: fedgray builds it.
    assert torch.equal(get_tokenizer("fgt-not-registered", signed_cfg)(CAPTIONS), expected)
    backbone = SealedBackbone(model, by_name, name=NAME, level="gray")
    assert (backbone.interface.text_family, backbone.interface.context_length) == (
        "custom-text",
        CONTEXT,
    )
    assert torch.equal(backbone.tokenize(CAPTIONS), expected)  # bidirectional: no free slot


@pytest.mark.parametrize(("level", "method"), [("gray", "dga"), ("gray+", "lga")])
def test_adapters_at_initialisation_are_the_zero_shot_model(
    model: nn.Module, level: str, method: str
) -> None:
    backbone = SealedBackbone(model, get_tokenizer(NAME), name=NAME, level=level)
    assert_adapters_start_as_zero_shot(backbone, method, model, CAPTIONS[:2])


def test_gradients_reach_every_adapter_and_no_weight(model: nn.Module) -> None:
    backbone = SealedBackbone(model, get_tokenizer(NAME), name=NAME, level="gray+")
    assert_gradients_reach_every_adapter(backbone, CAPTIONS[:2])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def artifact(
    signed_cfg: dict[str, Any], keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return seal_with_cli(NAME, keys, tmp_path_factory.mktemp("artifacts") / f"{NAME}.fgs")


@pytest.fixture(scope="module")
def isolated(keys: KeyFiles, artifact: Path) -> Iterator[IsolatedBackbone]:
    """The runtime process knows no test config: the signed config builds the tokenizer."""
    files = {"verify_key": keys.verify_key, "content_key": keys.content_key}
    runtime = IsolatedBackbone(artifact, threads=1, level="gray", **files)
    yield runtime
    runtime.close()


def test_an_artifact_tokenizes_as_the_hf_tokenizer(
    keys: KeyFiles, artifact: Path, isolated: IsolatedBackbone, tokenizer_dir: Path
) -> None:
    """``fedgray seal`` -> load_artifact (in process) and the isolated runtime. The signed
    config names the tokenizer (here a folder, for SigLIP a hub id); it does not hold it."""
    files = {"verify_key": keys.verify_key, "content_key": keys.content_key}
    local = load_artifact(artifact, level="gray", **files)
    expected = _expected(tokenizer_dir)
    assert torch.equal(local.tokenize(CAPTIONS), expected)
    assert isolated.interface == local.interface
    assert torch.equal(isolated.tokenize(CAPTIONS), expected)


def test_a_hub_tokenizer_out_of_reach_is_one_line(signed_cfg: dict[str, Any]) -> None:
    """A tokenizer named by hub id (``timm/ViT-B-16-SigLIP``'s kind) needs the hub or its
    cache; the suite runs offline and no cache holds this one."""
    cfg = {**signed_cfg, "text_cfg": {**signed_cfg["text_cfg"], "hf_tokenizer_name": "fgt/none"}}
    with pytest.raises(BackboneLoadError) as refused:
        get_tokenizer("fgt-not-registered", cfg)
    message = str(refused.value)
    assert message.startswith("backbone.name: the tokenizer of 'fgt-not-registered' could not")
    assert "\n" not in message
