"""What a gray site can extract from the backbone by querying it, against the queries spent.

Gray access returns input gradients, and that is enough to learn parts of the model. Three
attacks, written as a site would write them, on a random-weight backbone whose true weights
this script holds to score them:

* **input-layer span**: every patch's pixel gradient is a combination of the patch
  embedding's filters, so the top singular vectors of the patch gradients span them (less
  their mean, which the LayerNorm after them hides). Scored by the residual of projecting
  the true centred filters onto the recovered span (0: exact span). The filters themselves
  stay unknown up to a width x width mix.
* **embedding rows**: a per-position shift (``token_shifts``) fitted by gradient descent so
  that a reference token plus the shift gives the features of the target token, over several
  contexts, is the difference of their embedding rows. Scored by cosine with the true
  difference.
* **distillation**: a student of the same shape trained on the backbone's image features of
  N random images (``epochs`` passes over them, at least 100 steps); scored by the mean
  cosine of student and backbone features (each centred on its mean over the held-out set)
  on held-out images of the same distribution, against N.

Every query goes through the sealed backbone, which counts the calls, samples forwarded and
samples with input gradients each attack spends: what ``backbone.sample_budget`` and
``backbone.gradient_budget`` bound (docs/security.md has the table this prints)::

    python -m simulations.extraction [--model fedgray-micro] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from fedgray.backbone import SealedBackbone, create_clip
from fedgray.backbone.budget import Spend
from fedgray.backbone.loading import get_tokenizer
from fedgray.backbone.sealed import OPENAI_STD


@dataclass(frozen=True)
class Extraction:
    """One attack's score after ``calls`` encoder calls carrying ``samples`` inputs, of
    which ``gradients`` came back with their input gradients."""

    attack: str
    calls: int
    samples: int
    gradients: int
    score: float


def spent(attack: str, backbone: SealedBackbone, before: Spend, score: float) -> Extraction:
    """``attack``'s row: what ``backbone`` counted since ``before``, and the score."""
    used = backbone.spent - before
    return Extraction(attack, used.queries, used.samples, used.gradients, score)


def tower(model: nn.Module) -> nn.Module:
    """The image tower of an open_clip ``model``."""
    return cast(nn.Module, model.visual)


def seal(model: nn.Module, name: str) -> SealedBackbone:
    """``model`` behind a gray seal: what the site gets."""
    return SealedBackbone(model, get_tokenizer(name), name=name, level="gray")


def input_span(backbone: SealedBackbone, filters: torch.Tensor, *, images: int) -> Extraction:
    """Recover the span of the patch filters ``filters`` [width, 3, P, P] from the pixel
    gradients of ``images`` random images (one call each), and score it."""
    width, size = filters.shape[0], filters.shape[-1]
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)  # the published preprocessing
    before, patches = backbone.spent, []
    for _ in range(images):
        pixels = torch.rand(1, 3, backbone.interface.image_size, backbone.interface.image_size)
        pixels.requires_grad_(True)
        features = backbone.encode_image(pixels)
        (features * torch.randn_like(features)).sum().backward()
        assert pixels.grad is not None
        normalised = pixels.grad * std  # the gradient at the normalised pixels
        patches.append(F.unfold(normalised, size, stride=size)[0].T)  # [patches, 3*P*P]
    _, _, basis = torch.linalg.svd(torch.cat(patches).double(), full_matrices=False)
    # The LayerNorm after the patch embedding takes out each token's mean over channels,
    # so gradients carry nothing of the mean filter: width - 1 directions, of the centred
    # filters.
    span = basis[: width - 1]  # [width - 1, 3*P*P]
    truth = filters.reshape(width, -1).double()
    truth = truth - truth.mean(0)
    residual = truth - truth @ span.T @ span
    score = float(residual.norm() / truth.norm())
    return spent("input-layer span (residual)", backbone, before, score)


def embedding_row(
    backbone: SealedBackbone,
    table: torch.Tensor,
    *,
    target: int,
    reference: int,
    contexts: int = 8,
    steps: int = 200,
    seed: int = 0,
) -> Extraction:
    """Fit the shift that turns ``reference`` into ``target`` in ``contexts`` random
    contexts; score its cosine with the true row difference of ``table``."""
    generator = torch.Generator().manual_seed(seed)
    i = backbone.interface
    start, end = i.vocab_size - 2, i.vocab_size - 1  # CLIP's start and end of text
    fill = torch.randint(1, i.vocab_size - 2, (contexts, 2), generator=generator)
    rows = [[start, a, reference, b, end] for a, b in fill.tolist()]
    tokens = torch.zeros(contexts, i.context_length, dtype=torch.long)
    tokens[:, :5] = torch.tensor(rows)
    wanted = tokens.clone()
    wanted[:, 2] = target
    before = backbone.spent
    with torch.no_grad():
        goal = backbone.encode_text(wanted)
    shift = torch.zeros(i.token_width, requires_grad=True)
    optimizer = torch.optim.Adam([shift], lr=2e-3)
    position = torch.zeros(1, 3, 1)
    position[0, 2] = 1
    for _ in range(steps):
        shifts = (position * shift).expand(contexts, 3, i.token_width)
        loss = (backbone.encode_text(tokens, token_shifts=shifts) - goal).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    truth = table[target] - table[reference]
    score = float(F.cosine_similarity(shift.detach(), truth, dim=0))
    return spent("embedding row (cosine)", backbone, before, score)


def agreement(features: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Mean cosine of two batches of features, each less its mean over the batch."""
    return F.cosine_similarity(features - features.mean(0), goal - goal.mean(0)).mean()


def distillation_loss(out: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """What a student minimises to copy the backbone's features ``goal``: the centred
    disagreement, plus the error of the batch mean relative to the mean's own size."""
    mean = goal.mean(0)
    return 1 - agreement(out, goal) + F.mse_loss(out.mean(0), mean) / mean.square().mean()


Step = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # student, picked rows -> loss


def fit(
    student: nn.Module, queries: int, step: Step, *, epochs: int, steps: int, batch: int
) -> None:
    """Train ``student`` with Adam on ``step``'s loss over random batches of ``batch`` of the
    ``queries`` rows: ``epochs`` passes and at least ``steps`` steps."""
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(max(steps, epochs * queries // batch)):
        loss = step(student, torch.randperm(queries)[:batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def distill(
    backbone: SealedBackbone,
    student: nn.Module,
    *,
    queries: int,
    held_out: torch.Tensor,
    teacher_held_out: torch.Tensor,
    epochs: int = 2,
    steps: int = 100,
    batch: int = 128,
) -> Extraction:
    """Train ``student`` (an image tower of the backbone's shape) on the backbone's features
    of ``queries`` random images, ``epochs`` passes and at least ``steps`` steps; score the
    mean cosine with the backbone on ``held_out``."""
    size, before = backbone.interface.image_size, backbone.spent
    images = torch.rand(queries, 3, size, size)
    if queries:
        with torch.no_grad():
            targets = torch.cat([backbone.encode_image(b) for b in images.split(batch)])

        def step(s: nn.Module, pick: torch.Tensor) -> torch.Tensor:
            return distillation_loss(s(images[pick]), targets[pick])

        fit(student, queries, step, epochs=epochs, steps=steps, batch=batch)
    with torch.no_grad():
        out = student(held_out)
    # Centred: on random images a random-weight backbone's features share one large mean
    # direction, which any student learns from a single batch; what is scored is the part
    # that depends on the input.
    score = float(agreement(out, teacher_held_out))
    return spent("distillation (held-out centred cosine)", backbone, before, score)


def distillation_start(
    backbone: SealedBackbone, name: str
) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """What every distillation is scored on and starts from: 512 held-out images, the
    backbone's features of them (the scorer's call, not the attacker's) and a fresh
    random-weight image tower of ``name`` (seed 1) as the student."""
    size = backbone.interface.image_size
    held_out = torch.rand(512, 3, size, size)
    with torch.no_grad():
        teacher = backbone.encode_image(held_out)
    torch.manual_seed(1)
    return held_out, teacher, tower(create_clip(name, None)).train()


def run(
    name: str, *, span_images: Sequence[int], rows: int, distill_queries: Sequence[int]
) -> Iterator[Extraction]:
    """Every attack on a fresh random-weight ``name``: the rows of the table, each as soon
    as it is measured."""
    torch.manual_seed(0)
    model = create_clip(name, None).eval()
    filters = cast(nn.Conv2d, tower(model).conv1).weight.detach().clone()
    table = cast(nn.Embedding, model.token_embedding).weight.detach().clone()
    backbone = seal(model, name)
    yield from (input_span(backbone, filters, images=n) for n in span_images)
    for k in range(rows):
        pair = torch.randint(1, backbone.interface.vocab_size - 2, (2,)).tolist()
        yield embedding_row(backbone, table, target=pair[0], reference=pair[1], seed=k)
    held_out, teacher, student = distillation_start(backbone, name)  # one start for every N
    for n in distill_queries:
        yield distill(
            backbone,
            copy.deepcopy(student),
            queries=n,
            held_out=held_out,
            teacher_held_out=teacher,
        )


def attack_parser(description: str) -> argparse.ArgumentParser:
    """The options every extraction driver takes: the model attacked and torch's threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="fedgray-micro", help="built-in or open_clip model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    return parser


def print_table(title: str, rows: Iterable[Extraction]) -> None:
    """Each of ``rows`` as a Markdown table row under ``title``, as it comes, then the time."""
    began = time.perf_counter()
    print(f"| {title} | calls | samples | gradients | score |")
    print("|---|---:|---:|---:|---:|", flush=True)
    for r in rows:
        row = f"| {r.attack} | {r.calls:,} | {r.samples:,} | {r.gradients:,} | {r.score:.3g} |"
        print(row, flush=True)
    print(f"({time.perf_counter() - began:.0f} s)")


def main() -> None:
    """Run every attack and print the table."""
    parser = attack_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2, help="embedding rows to recover")
    parser.add_argument(
        "--distill",
        default="0,512,2048,8192,32768",
        help="distillation sizes, comma-separated",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(n) for n in args.distill.split(",")]
    rows = run(args.model, span_images=(1, 2, 4, 8), rows=args.rows, distill_queries=sizes)
    print_table(f"attack on {args.model} (gray)", rows)


if __name__ == "__main__":
    main()
