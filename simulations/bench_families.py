"""Full-size open_clip backbones of every family, randomly initialised, sealed at gray:
parameters, DGA's trainable fraction, identity at initialisation and one DGA step's time::

    python -m simulations.bench_families [--models RN50 convnext_base ...] [--batch-size 2]

Random weights need no download. Models whose tokenizer needs Hugging Face transformers
(SigLIP) get open_clip's own tokenizer here: the forward pass is what is measured.
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgray.adapters import build_model
from fedgray.backbone import BackboneLoadError, SealedBackbone, create_clip, get_tokenizer
from fedgray.backbone.loading import open_clip_module

MODELS = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "RN101", "convnext_base", "ViT-B-16-SigLIP"]
CAPTIONS = ["a photo of a dog", "a sketch of a red circle"]


def measure(name: str, batch: int) -> str:
    """One line: families, parameters, DGA fraction, identity, step seconds."""
    torch.manual_seed(0)
    model = create_clip(name, None)
    try:
        tokenizer = get_tokenizer(name)
    except BackboneLoadError:
        tokenizer = open_clip_module().SimpleTokenizer()
    backbone = SealedBackbone(model, tokenizer, name=name, level="gray")
    i, dga = backbone.interface, build_model(backbone, "dga")
    pixels = torch.rand(batch, 3, i.image_size, i.image_size)
    vocab = int(getattr(model, "vocab_size"))  # noqa: B009 - open_clip's models are untyped
    tokens = backbone.tokenize(CAPTIONS * (batch // 2 or 1))[:batch].clamp(max=vocab - 1)
    with torch.no_grad():
        image, text = dga(pixels, tokens)
        same = torch.equal(image, backbone.encode_image(pixels)) and torch.equal(
            text, backbone.encode_text(tokens)
        )
    start = time.perf_counter()
    image, text = dga(pixels, tokens)
    (image @ text.T).logsumexp(-1).sum().backward()
    seconds = time.perf_counter() - start
    return (
        f"{name:<16} {i.image_family:<16} {i.text_family:<12} {i.parameter_count / 1e6:8.1f} M  "
        f"DGA {dga.trainable_count():>7,} = {100 * dga.trainable_fraction():.3f} %  "
        f"identity {'exact' if same else 'DIFFERS'}  step {seconds:.1f} s (batch {batch})"
    )


def main() -> None:
    """Measure each model named on the command line (default: one or two per family)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    for name in args.models:
        print(measure(name, args.batch_size), flush=True)


if __name__ == "__main__":
    main()
