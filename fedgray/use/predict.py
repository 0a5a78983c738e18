"""``fedgray predict``: class predictions or caption rankings for a folder of images.

Scores are computed exactly as the run evaluated (:func:`fedgray.tasks.metrics.evaluate`):
the same towers, batches of the same size, class logits pooled over each class's prompts
at the backbone's logit scale. So the accuracy of these predictions on labelled images is
the accuracy ``fedgray evaluate`` and the run itself report.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fedgray.adapters import AdaptedCLIP
from fedgray.backbone import Backbone
from fedgray.tasks.losses import class_logits, encoders, similarity
from fedgray.tasks.metrics import batched, logit_scale

BATCH = 256  # the batch size fedgray.tasks.metrics.evaluate encodes with


@torch.no_grad()
def image_features(
    model: AdaptedCLIP, pixels: torch.Tensor, *, progress: bool = False
) -> torch.Tensor:
    """Adapted image features of ``pixels``, in batches of :data:`BATCH`, with a bar."""
    model.eval()
    towers, out = encoders(model), []
    starts = range(0, pixels.shape[0], BATCH)
    for start in tqdm(starts, desc="images", unit="batch", disable=not progress, leave=False):
        out.append(towers.encode_images(pixels[start : start + BATCH]))
    return torch.cat(out)


@torch.no_grad()
def text_features(model: AdaptedCLIP, backbone: Backbone, texts: Sequence[str]) -> torch.Tensor:
    """Adapted text features of ``texts`` (tokenized by the backbone)."""
    model.eval()
    tokens = backbone.tokenize(list(texts)).to(backbone.device)
    return batched(encoders(model).encode_texts, tokens, BATCH)


def class_scores(
    model: AdaptedCLIP, backbone: Backbone, images: torch.Tensor, prompts: Sequence[Sequence[str]]
) -> torch.Tensor:
    """Class logits [N, classes] of image features ``images``; ``prompts[c]``: class c's."""
    pairs = [(p, c) for c, group in enumerate(prompts) for p in group]
    features = text_features(model, backbone, [p for p, _ in pairs])
    classes = torch.tensor([c for _, c in pairs], device=features.device)
    return class_logits(
        images, features, classes, num_classes=len(prompts), scale=logit_scale(model)
    )


@dataclass(frozen=True)
class Written:
    """Files a prediction wrote."""

    csv: Path
    jsonl: Path


def write_classes(
    out: Path, files: Sequence[str], names: Sequence[str], logits: torch.Tensor
) -> Written:
    """``predictions.csv`` (file, prediction, score, one probability column per class) and
    ``predictions.jsonl`` (the same, one object per image)."""
    probabilities = logits.float().softmax(dim=1).cpu()
    best = probabilities.argmax(dim=1)
    written = Written(out / "predictions.csv", out / "predictions.jsonl")
    with written.csv.open("w", newline="") as table, written.jsonl.open("w") as lines:
        writer = csv.writer(table)
        writer.writerow(["file", "prediction", "score", *names])
        for i, file in enumerate(files):
            row = probabilities[i].tolist()
            label, score = names[int(best[i])], row[int(best[i])]
            writer.writerow([file, label, f"{score:.6f}", *(f"{p:.6f}" for p in row)])
            scores = dict(zip(names, row, strict=True))
            record = {"file": file, "prediction": label, "score": score, "scores": scores}
            lines.write(json.dumps(record) + "\n")
    return written


def write_rankings(
    out: Path,
    files: Sequence[str],
    captions: Sequence[str],
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    top: int,
) -> Written:
    """``rankings.csv`` (caption, rank, file, cosine) with the ``top`` images of each
    caption, and ``rankings.jsonl``: per caption its images, per image its captions."""
    sims = similarity(images, texts, 1.0).float().cpu()  # [images, captions]
    written = Written(out / "rankings.csv", out / "rankings.jsonl")
    with written.csv.open("w", newline="") as table, written.jsonl.open("w") as lines:
        writer = csv.writer(table)
        writer.writerow(["caption", "rank", "file", "cosine"])
        for j, caption in enumerate(captions):
            values, order = sims[:, j].topk(min(top, len(files)))
            ranked = [
                {"file": files[i], "cosine": v}
                for i, v in zip(order.tolist(), values.tolist(), strict=True)
            ]
            for rank, entry in enumerate(ranked, start=1):
                writer.writerow([caption, rank, entry["file"], f"{entry['cosine']:.6f}"])
            lines.write(json.dumps({"caption": caption, "images": ranked}) + "\n")
        for i, file in enumerate(files):
            values, order = sims[i].topk(min(top, len(captions)))
            ranked_captions = [
                {"caption": captions[j], "cosine": v}
                for j, v in zip(order.tolist(), values.tolist(), strict=True)
            ]
            lines.write(json.dumps({"file": file, "captions": ranked_captions}) + "\n")
    return written
