"""Trial-federation material: the built-in benchmark's partitions as site data folders, and
the model owner's sealed backbone.

A real site already has its data on disk; the demo writes each simulated site's partition
(the same one ``fedgray run`` would give it) as a ``folder`` dataset so that the deployed
sites read files, exactly as a hospital's SuperNode would.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fedgray.config import Config
from fedgray.data.folder import CAPTIONS_FILE
from fedgray.data.registry import load_dataset
from fedgray.data.sets import ImageTextSet
from fedgray.fl.clientapp.node_config import TRAIN_SPLIT
from fedgray.fl.common.partitions import partition_indices, partition_pool


def write_folder_set(dataset: ImageTextSet, root: Path) -> Path:
    """Write ``dataset`` as ``root/train``: PNG images and a ``captions.csv`` (file, caption,
    and label when every sample has one)."""
    split = root / TRAIN_SPLIT
    (split / "images").mkdir(parents=True, exist_ok=True)
    labelled = bool(dataset.class_names) and bool((dataset.labels >= 0).all())
    pixels = (dataset.images.clamp(0, 1) * 255).round().to(torch.uint8)
    with (split / CAPTIONS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption", "label"] if labelled else ["file", "caption"])
        for i, caption in enumerate(dataset.captions):
            name = f"images/{i:05d}.png"
            Image.fromarray(np.ascontiguousarray(pixels[i].permute(1, 2, 0).numpy())).save(
                split / name
            )
            label = [dataset.class_names[int(dataset.labels[i])]] if labelled else []
            writer.writerow([name, caption, *label])
    return root


def write_partition_folders(config: Config, num_sites: int, sites_dir: Path) -> list[Path]:
    """Each of ``num_sites`` sites' partition of ``config``'s pool (its training and
    held-out samples together; the site holds out its own) as ``sites_dir/site-N/data``."""
    pool = partition_pool(config)
    blocks = [
        load_dataset(
            domain, split="train", size=pool.block, seed=config.data.seed, root=config.data.root
        )
        for domain in pool.domains
    ]
    folders = []
    for site in range(num_sites):
        share = partition_indices(config, partition_id=site, num_partitions=num_sites)
        indices = np.sort(np.concatenate([share.train, share.heldout]))
        root = sites_dir / f"site-{site}" / "data"
        folders.append(write_folder_set(blocks[share.group].subset(indices), root))
    return folders


@dataclass(frozen=True)
class OwnerFiles:
    """What the model owner hands each site: the artifact and the two keys it needs."""

    artifact: Path
    verify_key: Path
    content_key: Path


def seal_backbone(config: Config, owner_dir: Path, *, progress: bool = False) -> OwnerFiles:
    """The owner's step: keys, then ``config``'s backbone sealed at its level (the built-in
    one pretrained if not cached, with a progress bar on stderr when ``progress``: minutes
    on a small machine; a random one seeded with ``pretrain.seed``)."""
    from fedgray.backbone.loading import create_clip
    from fedgray.owner.keys import generate_keys
    from fedgray.owner.pretrain import resolve_pretrained
    from fedgray.owner.seal import seal

    keys = generate_keys(owner_dir)
    spec = config.backbone
    source = resolve_pretrained(spec.name, spec.pretrained, config.pretrain, progress=progress)
    with torch.random.fork_rng():
        torch.manual_seed(config.pretrain.seed)  # the same random weights as the server's
        model = create_clip(spec.name, source)
    artifact = owner_dir / f"{spec.name}.sealed"
    seal(
        model,
        artifact,
        name=spec.name,
        level=spec.level,
        signing_key=keys.signing_key,
        content_key=keys.content_key,
    )
    return OwnerFiles(artifact, keys.verify_key, keys.content_key)
