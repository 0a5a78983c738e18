"""Update inversion by an honest-but-curious server: a site's image features read from its
plain update of the image output adapter, from SecAgg+'s sum of sites, and under DP.

Each site takes one local step (FedSGD, the server's best case: more steps blur the
update) of DP-SGD's per-sample retrieval objective on a batch of ``B`` of its images,
through the plain linear image output adapter (``method: output`` without whitening).
The server inverts the update it receives (:mod:`fedgray.privacy.inversion`); for each of
site 0's images the table gives the best cosine between its true backbone features and a
recovered row, both relative to the population's mean feature, averaged. Settings:
``plain`` (site 0's update alone), ``secagg`` (the sum of ``--sites`` sites' updates, all
SecAgg+ reveals), ``epsilon 8`` / ``epsilon 1`` (site 0's update with per-sample clipping
at ``privacy.max_grad_norm`` and the Gaussian noise the config's accountant calibrates for
a full-batch run of ``train.steps`` steps). ``prior``: the same measure with other images
of the sites' population as the candidates (the test split, which no site holds): what a
server that knows the population guesses without any update::

    python -m simulations.update_inversion configs/private_sketch.yaml \
        --set train.steps=50 --output runs/inversion

Writes ``results.md`` into the output folder and prints it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from fedgray.adapters import build_model
from fedgray.config import Config
from fedgray.materials import load_task_data, open_backbone
from fedgray.privacy import plan_noise, private_task
from fedgray.privacy.features import CachedImageHead, backbone_features
from fedgray.privacy.inversion import best_cosine, invert_linear
from fedgray.resolver import load_config
from fedgray.tasks import TaskData
from simulations.tables import write_results

PLAIN_ADAPTER = ["method.name=output", "method.whiten=null", "method.text_subspace=null"]
Update = tuple[torch.Tensor, torch.Tensor]

EPSILONS = (8.0, 1.0)  # the private columns of the tables


def inversion_parser(description: str) -> argparse.ArgumentParser:
    """The arguments both inversion drivers take: the config, its overrides, the batch
    sizes, the sites in SecAgg+'s sum and the output folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="YAML run configuration (retrieval)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--sites", type=int, default=4, help="sites in SecAgg+'s sum")
    parser.add_argument("--output", required=True, help="folder for results.md")
    return parser


def noise_seed(*, seed: int, batch: int, epsilon: float) -> int:
    """The seed of the DP noise added to a ``batch``-sample update at ``epsilon``: one per
    (seed, batch, epsilon). With one draw for every epsilon the noise differs only in
    scale, which the inversion's ratio cancels: where noise dominates, the columns would
    come out equal whatever the epsilon."""
    entropy = [seed, batch, round(epsilon * 1000)]  # epsilons as given, to 3 decimals
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def gradients(
    head: CachedImageHead,
    config: Config,
    data: TaskData,
    rows: torch.Tensor,
    *,
    adapter: str = "image_out",
) -> list[Update]:
    """Each row's gradient of an output adapter (``image_out`` or, under the ``text-out``
    objective, ``text_out``: weight, bias) under the per-sample objective, the adapters at
    their initial (identity) values."""
    task = private_task(config.train.task, head.model, config.privacy.objective)
    scale = head.model.backbone.interface.logit_scale
    module = getattr(head.model, adapter)
    assert isinstance(module, torch.nn.Linear)
    found = []
    for row in rows:
        batch = tuple(t[row : row + 1] for t in data.as_dataset().tensors)
        module.zero_grad()
        task.loss(head, batch, data, scale).backward()
        assert module.weight.grad is not None and module.bias.grad is not None
        found.append((module.weight.grad.clone(), module.bias.grad.clone()))
    return found


def mean_update(parts: list[Update]) -> Update:
    """The plain update of one step over these samples (the gradient of the mean loss)."""
    return (
        torch.stack([w for w, _ in parts]).mean(0),
        torch.stack([b for _, b in parts]).mean(0),
    )


def private_update(parts: list[Update], *, clip: float, sigma: float, seed: int) -> Update:
    """DP-SGD's update: per-sample gradients clipped to ``clip``, summed, Gaussian noise of
    std ``sigma * clip`` added, divided by the batch size."""
    generator = torch.Generator().manual_seed(seed)
    weight, bias = torch.zeros_like(parts[0][0]), torch.zeros_like(parts[0][1])
    for w, b in parts:
        factor = min(1.0, clip / (torch.cat([w.flatten(), b]).norm().item() + 1e-12))
        weight, bias = weight + factor * w, bias + factor * b
    weight = weight + sigma * clip * torch.randn(weight.shape, generator=generator)
    bias = bias + sigma * clip * torch.randn(bias.shape, generator=generator)
    return weight / len(parts), bias / len(parts)


def private_updates(
    config: str | None, overrides: Sequence[str], parts: list[Update], *, steps: int, seed: int
) -> list[Update]:
    """:func:`private_update` of ``parts`` (one batch of all of them) at epsilon 8 and 1: the
    noise the accountant plans for ``config`` with DP-SGD on at that target over ``steps``,
    drawn from each epsilon's own :func:`noise_seed`."""
    updates = []
    for epsilon in EPSILONS:
        privacy = load_config(
            config,
            [
                *overrides,
                "privacy.enabled=true",
                "privacy.noise_multiplier=null",
                f"privacy.target_epsilon={epsilon}",
            ],
        ).privacy
        size = len(parts)
        sigma = plan_noise(
            privacy, num_samples=size, batch_size=size, total_steps=steps
        ).noise_multiplier
        drawn = noise_seed(seed=seed, batch=size, epsilon=epsilon)
        updates.append(private_update(parts, clip=privacy.max_grad_norm, sigma=sigma, seed=drawn))
    return updates


def main(argv: Sequence[str] | None = None) -> None:
    """Measure each batch size and setting; print the table and write ``results.md``."""
    args = inversion_parser((__doc__ or "").split("::")[0]).parse_args(argv)
    largest = max(args.batches)
    config = load_config(
        args.config, [*args.overrides, *PLAIN_ADAPTER, f"data.train_size={args.sites * largest}"]
    )
    torch.manual_seed(config.train.seed)
    backbone = open_backbone(config, progress=False)
    model = build_model(backbone, config.method)
    head = CachedImageHead(model)
    sites = load_task_data(config.data, backbone, split="train")
    sites = replace(sites, images=backbone_features(model, sites.images))
    population = load_task_data(config.data, backbone, split="test")  # none of the sites' images
    prior_candidates = backbone_features(model, population.images)
    center = prior_candidates.mean(dim=0)  # the population's: what lies beyond it counts
    rows = [
        f"| batch | plain | secagg (sum of {args.sites} sites) | epsilon 8 | epsilon 1 | prior |",
        "|---|---|---|---|---|---|",
    ]
    for size in args.batches:
        own = torch.arange(size)
        parts = gradients(head, config, sites, own)
        truth = sites.images[own]
        plain = mean_update(parts)
        others = [
            mean_update(
                gradients(head, config, sites, torch.arange(s * largest, s * largest + size))
            )
            for s in range(1, args.sites)
        ]
        summed = (plain[0] + sum(w for w, _ in others), plain[1] + sum(b for _, b in others))
        cells = [
            best_cosine(truth, invert_linear(*plain), center=center),
            best_cosine(truth, invert_linear(*summed), center=center),
        ]
        noisy_updates = private_updates(
            args.config, args.overrides, parts, steps=config.train.steps, seed=config.train.seed
        )
        for noisy in noisy_updates:
            cells.append(best_cosine(truth, invert_linear(*noisy), center=center))
        cells.append(best_cosine(truth, prior_candidates, center=center))
        rows.append(f"| {size} | " + " | ".join(f"{c.mean():.3f}" for c in cells) + " |")
        print(rows[-1], flush=True)
    write_results(args.output, rows)


if __name__ == "__main__":
    main()
