"""Step-time overhead of the isolated backbone runtime against in-process sealing.

Seals a ``fedgray-tiny`` (random weights: the same compute as the pretrained one) into a
temporary artifact, then times DGA training steps (batch 64, retrieval loss, the built-in
``world/sketch`` data) with the backbone loaded in-process and served by the isolated
runtime, and prints the median step times and their ratio::

    python -m simulations.bench_isolation [--steps 30] [--model fedgray-tiny]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedgray.adapters import build_model
from fedgray.backbone import create_clip, generate_keys, load_artifact, seal
from fedgray.backbone.keys import read_content_key, read_signing_key
from fedgray.backbone.runtime import IsolatedBackbone
from fedgray.data.registry import load_dataset
from fedgray.tasks.data import prepare
from fedgray.tasks.losses import contrastive_loss


def step_times(backbone: object, *, steps: int, batch_size: int) -> list[float]:
    """Seconds per DGA training step (after two warm-up steps) on ``world/sketch``."""
    dataset = load_dataset("world/sketch", split="train", size=batch_size * 4, seed=0)
    data = prepare(dataset, backbone.tokenize, image_size=backbone.interface.image_size)
    torch.manual_seed(0)
    model = build_model(backbone, "dga")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for step in range(steps + 2):
        index = torch.arange(batch_size) + (step % 4) * batch_size
        started = time.perf_counter()
        image, text = model(data.images[index], data.tokens[index])
        loss = contrastive_loss(image, text, scale=backbone.interface.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times[2:]


def main() -> None:
    """Run the comparison and print one line per mode and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keys = generate_keys(Path(tmp) / "keys")
        torch.manual_seed(0)
        artifact = Path(tmp) / "backbone.fgs"
        seal(
            create_clip(args.model, None),
            artifact,
            name=args.model,
            level="gray",
            signing_key=read_signing_key(keys.signing_key),
            content_key=read_content_key(keys.content_key),
        )
        paths = {"verify_key": keys.verify_key, "content_key": keys.content_key}
        medians = {}
        backbone = load_artifact(artifact, **paths)
        medians["in-process"] = statistics.median(
            step_times(backbone, steps=args.steps, batch_size=args.batch_size)
        )
        del backbone
        with IsolatedBackbone(artifact, threads=torch.get_num_threads(), **paths) as isolated:
            medians["isolated"] = statistics.median(
                step_times(isolated, steps=args.steps, batch_size=args.batch_size)
            )
    for mode, seconds in medians.items():
        print(f"{mode:<11} {seconds * 1000:7.1f} ms per step (median of {args.steps})")
    print(f"ratio isolated / in-process: {medians['isolated'] / medians['in-process']:.2f}")


if __name__ == "__main__":
    main()
