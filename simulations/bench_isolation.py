"""Step-time overhead of the isolated backbone runtime against in-process sealing.

Seals a ``fedgray-tiny`` (random weights: the same compute as the pretrained one) into a
temporary artifact, then times DGA training steps (batch 64, retrieval loss, the built-in
``world/sketch`` data) with the backbone loaded in-process and served by the isolated
runtime, in alternating blocks so that changes in machine load hit both, and prints the
median step times and their ratio::

    python -m simulations.bench_isolation [--steps 60] [--threads N] [--model fedgray-tiny]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedgray.adapters import build_model
from fedgray.backbone import Backbone, create_clip, generate_keys, load_artifact, seal
from fedgray.backbone.runtime import IsolatedBackbone
from fedgray.data.registry import load_dataset
from fedgray.tasks.data import prepare
from fedgray.tasks.losses import contrastive_loss


class _Trainer:
    """DGA training steps (retrieval loss, batch ``batch_size``) on ``world/sketch``."""

    def __init__(self, backbone: Backbone, *, batch_size: int) -> None:
        dataset = load_dataset("world/sketch", split="train", size=batch_size * 4, seed=0)
        self.data = prepare(dataset, backbone.tokenize, image_size=backbone.interface.image_size)
        self.scale = backbone.interface.logit_scale
        self.batch_size = batch_size
        torch.manual_seed(0)
        self.model = build_model(backbone, "dga")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-3)
        self.step = 0

    def timed_steps(self, count: int) -> list[float]:
        """Seconds of each of ``count`` more steps."""
        times = []
        for _ in range(count):
            index = torch.arange(self.batch_size) + (self.step % 4) * self.batch_size
            self.step += 1
            started = time.perf_counter()
            image, text = self.model(self.data.images[index], self.data.tokens[index])
            loss = contrastive_loss(image, text, scale=self.scale)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            times.append(time.perf_counter() - started)
        return times


def main() -> None:
    """Run the comparison and print one line per mode and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fedgray-tiny", help="built-in or open_clip model")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per mode")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of each process (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        keys = generate_keys(Path(tmp) / "keys")
        torch.manual_seed(0)
        artifact = Path(tmp) / "backbone.fgs"
        seal(
            create_clip(args.model, None),
            artifact,
            name=args.model,
            level="gray",
            signing_key=keys.signing_key,
            content_key=keys.content_key,
        )
        verify_key, content_key = keys.verify_key, keys.content_key
        in_process = load_artifact(artifact, verify_key=verify_key, content_key=content_key)
        with IsolatedBackbone(
            artifact,
            verify_key=verify_key,
            content_key=content_key,
            threads=torch.get_num_threads(),
        ) as isolated:
            trainers = {
                "in-process": _Trainer(in_process, batch_size=args.batch_size),
                "isolated": _Trainer(isolated, batch_size=args.batch_size),
            }
            times: dict[str, list[float]] = {mode: [] for mode in trainers}
            for trainer in trainers.values():
                trainer.timed_steps(2)  # warm-up
            for _ in range(args.blocks):  # interleaved, so that load changes hit both
                for mode, trainer in trainers.items():
                    times[mode] += trainer.timed_steps(args.steps // args.blocks)
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, seconds in medians.items():
        print(f"{mode:<11} {seconds * 1000:7.1f} ms per step (median of {len(times[mode])})")
    print(f"ratio isolated / in-process: {medians['isolated'] / medians['in-process']:.2f}")


if __name__ == "__main__":
    main()
