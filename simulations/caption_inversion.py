"""Caption reconstruction by an honest-but-curious server: which captions and class words a
site trained on, read from its update of the text output adapter (the text side of
:mod:`simulations.update_inversion`).

Under the ``text-out`` objective the text output adapter is a linear map on the backbone's
text features, so a row of its weight update divided by the same entry of its bias update
is a mixture of the text features it saw in the step (:mod:`fedgray.privacy.inversion`):
the site's own captions, and the public captions its loss uses as negatives. Each site
takes one local step (FedSGD, the server's best case) on a batch of ``B`` of its examples
through plain linear adapters. The attacker enumerates the caption space (here every
caption of the sites, of the population and of the public pool) and encodes it with the
text side (as any holder of the sealed backbone can). It names as many captions as site
0's batch holds distinct ones: those nearest to any recovered row (cosines relative to the
captions' mean). Each cell gives the share of the named captions that are site 0's, and
after the slash the share of site 0's classes that a named caption carries. ``prior``: as
many guesses, the captions most frequent in the population (the test split, which no
site holds): what a server that knows the population guesses without any update. Settings
as in :mod:`simulations.update_inversion` (plain, SecAgg+'s sum of ``--sites`` sites, DP
at epsilon 8 and 1)::

    python -m simulations.caption_inversion configs/private_sketch.yaml \
        --set train.steps=50 --output runs/caption-inversion

Writes ``results.md`` into the output folder and prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.materials import load_task_data, open_backbone
from fedgray.privacy.features import CachedImageHead, backbone_features
from fedgray.privacy.inversion import invert_linear
from fedgray.resolver import load_config
from fedgray.tasks import TaskData
from simulations.tables import write_results
from simulations.update_inversion import (
    PLAIN_ADAPTER,
    Update,
    gradients,
    inversion_parser,
    mean_update,
    private_updates,
)

CHUNK = 256  # captions per text-side call


def _key(row: torch.Tensor) -> bytes:
    return row.cpu().numpy().tobytes()


class CaptionSpace:
    """The captions an attacker enumerates, their text features (what the text output
    adapter sees), their class where an example carries it, and their frequency in the
    population."""

    def __init__(self, model: AdaptedCLIP, labelled: Sequence[TaskData], public: TaskData) -> None:
        rows: dict[bytes, torch.Tensor] = {}
        self.labels: dict[bytes, int] = {}
        for data in labelled:
            for tokens, label in zip(data.tokens, data.labels, strict=True):
                rows.setdefault(_key(tokens), tokens)
                self.labels.setdefault(_key(tokens), int(label))
        for tokens in public.public_tokens if public.public_tokens is not None else []:
            rows.setdefault(_key(tokens), tokens)
        self.keys = list(rows)
        self.index = {key: i for i, key in enumerate(self.keys)}
        stacked = torch.stack([rows[k] for k in self.keys])
        with torch.no_grad():
            self.features = torch.cat([model.bare_texts(c) for c in stacked.split(CHUNK)])
        self.center = self.features.mean(dim=0)

    def named(self, recovered: torch.Tensor, count: int) -> set[int]:
        """The ``count`` captions nearest to any recovered row (cosine beyond the mean)."""
        if len(recovered) == 0:
            return set()
        rows = F.normalize(recovered - self.center, dim=-1)
        space = F.normalize(self.features - self.center, dim=-1)
        nearest = (rows @ space.T).max(dim=0).values
        return set(nearest.topk(min(count, len(nearest))).indices.tolist())

    def hits(self, data: TaskData, named: set[int]) -> tuple[float, float]:
        """The share of the ``named`` captions that are captions of ``data``, and of
        ``data``'s classes that a named caption carries."""
        own = {self.index[_key(t)] for t in data.tokens}
        classes = {self.labels.get(self.keys[i]) for i in named}
        own_classes = {int(label) for label in data.labels}
        return len(named & own) / max(len(named), 1), len(own_classes & classes) / len(own_classes)

    def most_frequent(self, population: TaskData, count: int) -> set[int]:
        """The ``count`` captions most frequent in ``population``."""
        counts = Counter(self.index[_key(t)] for t in population.tokens)
        return {i for i, _ in counts.most_common(count)}


def _cell(found: tuple[float, float]) -> str:
    return f"{100 * found[0]:.0f}% / {100 * found[1]:.0f}%"


def main(argv: Sequence[str] | None = None) -> None:
    """Measure each batch size and setting; print the table and write ``results.md``."""
    args = inversion_parser((__doc__ or "").split("::")[0]).parse_args(argv)
    largest = max(args.batches)
    plain = [*args.overrides, *PLAIN_ADAPTER, "privacy.objective=text-out"]
    config = load_config(args.config, [*plain, f"data.train_size={args.sites * largest}"])
    torch.manual_seed(config.train.seed)
    backbone = open_backbone(config, progress=False)
    model = build_model(backbone, config.method)
    head = CachedImageHead(model)
    sites = load_task_data(config.data, backbone, split="train")
    sites = replace(sites, images=backbone_features(model, sites.images))
    population = load_task_data(config.data, backbone, split="test")  # none of the sites' examples
    space = CaptionSpace(model, [sites, population], sites)
    rows = [
        f"| batch | plain | secagg (sum of {args.sites} sites) | epsilon 8 | epsilon 1 | prior |",
        "|---|---|---|---|---|---|",
    ]
    for size in args.batches:
        own = sites.subset(torch.arange(size))
        parts = gradients(head, config, sites, torch.arange(size), adapter="text_out")
        updates: list[Update] = [mean_update(parts)]
        others = [
            mean_update(
                gradients(
                    head,
                    config,
                    sites,
                    torch.arange(s * largest, s * largest + size),
                    adapter="text_out",
                )
            )
            for s in range(1, args.sites)
        ]
        first = updates[0]
        updates.append((first[0] + sum(w for w, _ in others), first[1] + sum(b for _, b in others)))
        updates += private_updates(
            args.config, plain, parts, steps=config.train.steps, seed=config.train.seed
        )
        count = len({_key(t) for t in own.tokens})  # the attacker's guesses: one per caption
        named = [space.named(invert_linear(*update), count) for update in updates]
        named.append(space.most_frequent(population, count))
        cells = [_cell(space.hits(own, n)) for n in named]
        rows.append(f"| {size} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    write_results(args.output, rows)


if __name__ == "__main__":
    main()
