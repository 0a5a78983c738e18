"""What a gray+ site can extract through the backbone's entry points, against gray.

At ``gray+`` a site may enter every transformer block of a tower: it sends per-layer tokens
(``prompts`` [B, layers, n, W]) and gates (``gates`` [B, layers, 1]), which every token of
that layer attends to through the block's own value and output projections, and it gets
the gradients to them back. With one token per layer the attention over it is 1, so the
site adds a vector of its choice (through the block's value-output map) to the residual
stream inside each block and reads the gradient of its loss there: access to the layers
between the entry points that gray does not give. Two attacks written as such a site would
write them, both a distillation of the image tower (the architecture and the entry points'
code are public), scored like the gray distillation of :mod:`simulations.extraction` and
run beside it on the same images, student start and held-out set:

* **entry outputs**: every query also carries a random token at each layer with a small
  random gate; the student, run through the same entry code, is fitted to the features of
  those perturbed passes (the queries explore the residual stream where random images do
  not).
* **entry gradients**: every query carries a random token at each layer at a gate of
  ``1e-2`` (so its features are nearly the plain ones) and a random direction of the
  features to differentiate; the student is fitted to the features and, by double
  backpropagation, to the gradients at every layer's token (the residual stream's gradient
  pulled back through each block's value-output map: a width of numbers per layer and sample).

Scored on plain held-out images (no entry tokens: what a stolen copy is for)::

    python -m simulations.extraction_entry [--queries 512] [--steps 100] [--threads 2]
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fedgray.backbone import SealedBackbone, create_clip, encoders
from fedgray.backbone.budget import Spend
from fedgray.backbone.loading import get_tokenizer
from fedgray.backbone.sealed import OPENAI_MEAN, OPENAI_STD
from simulations.extraction import (
    Extraction,
    agreement,
    attack_parser,
    distillation_loss,
    distillation_start,
    fit,
    print_table,
    spent,
)

GRADIENT_GATE = 1e-2  # small: the queried features stay close to the plain ones


def seal_plus(model: nn.Module, name: str) -> SealedBackbone:
    """``model`` behind a gray+ seal: what the site gets."""
    return SealedBackbone(model, get_tokenizer(name), name=name, level="gray+")


def student_features(
    student: nn.Module,
    pixels: torch.Tensor,
    prompts: torch.Tensor | None = None,
    gates: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student image tower on pixels in [0, 1] with the published preprocessing and,
    when given, the entry tokens, through fedgray's own entry code (public, like the
    architecture). The math attention kernel: its backward can be differentiated again."""
    mean, std = (torch.tensor(c).view(1, 3, 1, 1) for c in (OPENAI_MEAN, OPENAI_STD))
    with sdpa_kernel(SDPBackend.MATH):
        return encoders.encode_vit(student, (pixels - mean) / std, prompts, gates)


def _entry_shape(backbone: SealedBackbone) -> tuple[int, int]:
    (point,) = (p for p in backbone.interface.entry_points if p.tower == "image")
    return point.layers, point.width


def _score(
    attack: str,
    backbone: SealedBackbone,
    before: Spend,
    student: nn.Module,
    held_out: torch.Tensor,
    teacher_held_out: torch.Tensor,
) -> Extraction:
    with torch.no_grad():
        out = student_features(student, held_out)
    return spent(attack, backbone, before, float(agreement(out, teacher_held_out)))


def entry_outputs(
    backbone: SealedBackbone,
    student: nn.Module,
    *,
    queries: int,
    held_out: torch.Tensor,
    teacher_held_out: torch.Tensor,
    gate: float | None = 0.1,
    epochs: int = 2,
    steps: int = 100,
    batch: int = 128,
) -> Extraction:
    """Distil from the features of ``queries`` random images, each with a random token
    at every layer under a random gate of scale ``gate`` (forward only). ``gate=None``:
    no entry tokens, the gray attack through the same student code (the baseline)."""
    size, (layers, width) = backbone.interface.image_size, _entry_shape(backbone)
    before = backbone.spent
    images = torch.rand(queries, 3, size, size)
    prompts = torch.randn(queries, layers, 1, width)
    gates = torch.randn(queries, layers, 1) * (gate or 0.0)
    entered = gate is not None
    with torch.no_grad():
        targets = torch.cat(
            [
                backbone.encode_image(images[rows], **_entry(entered, prompts, gates, rows))
                for rows in torch.arange(queries).split(batch)
            ]
        )

    def step(s: nn.Module, pick: torch.Tensor) -> torch.Tensor:
        out = student_features(s, images[pick], **_entry(entered, prompts, gates, pick))
        return distillation_loss(out, targets[pick])

    fit(student, queries, step, epochs=epochs, steps=steps, batch=batch)
    attack = "gray+ entry outputs" if entered else "gray, same student code (baseline)"
    return _score(attack, backbone, before, student, held_out, teacher_held_out)


def _entry(
    entered: bool, prompts: torch.Tensor, gates: torch.Tensor, rows: torch.Tensor
) -> dict[str, torch.Tensor | None]:
    """The entry inputs of ``rows``, or none."""
    return {
        "prompts": prompts[rows] if entered else None,
        "gates": gates[rows] if entered else None,
    }


def entry_gradient_queries(
    backbone: SealedBackbone, images: torch.Tensor, *, batch: int = 128, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The attacker's queries: each image with a random token at every layer (gate
    :data:`GRADIENT_GATE`) and a random feature direction ``u``; back come the features and
    the gradients of ``u . features`` to the tokens, divided by the gate. Returns
    ``(prompts, gates, directions, features, token_grads)``."""
    generator = torch.Generator().manual_seed(seed)
    (layers, width), count = _entry_shape(backbone), images.shape[0]
    prompts = torch.randn(count, layers, 1, width, generator=generator)
    gates = torch.full((count, layers, 1), GRADIENT_GATE)
    directions = torch.randn(count, backbone.interface.embed_dim, generator=generator)
    features, grads = [], []
    for rows in torch.arange(count).split(batch):
        tokens = prompts[rows].requires_grad_(True)
        out = backbone.encode_image(images[rows], prompts=tokens, gates=gates[rows])
        (grad,) = torch.autograd.grad((out * directions[rows]).sum(), tokens)
        features.append(out.detach())
        grads.append(grad / GRADIENT_GATE)
    return prompts, gates, directions, torch.cat(features), torch.cat(grads)


def entry_gradients(
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
    """Distil from the features and the entry tokens' gradients of ``queries`` random
    images (:func:`entry_gradient_queries`), matching both (double backpropagation)."""
    size, before = backbone.interface.image_size, backbone.spent
    images = torch.rand(queries, 3, size, size)
    prompts, gates, directions, targets, token_grads = entry_gradient_queries(
        backbone, images, batch=batch
    )

    def step(s: nn.Module, pick: torch.Tensor) -> torch.Tensor:
        p, g = prompts[pick].requires_grad_(True), gates[pick]
        out = student_features(s, images[pick], p, g)
        (grad,) = torch.autograd.grad((out * directions[pick]).sum(), p, create_graph=True)
        match = torch.cosine_similarity(
            (grad / GRADIENT_GATE).flatten(1), token_grads[pick].flatten(1)
        )
        return distillation_loss(out, targets[pick]) + 1 - match.mean()

    fit(student, queries, step, epochs=epochs, steps=steps, batch=batch)
    return _score("gray+ entry gradients", backbone, before, student, held_out, teacher_held_out)


def run(name: str, *, queries: int, steps: int = 100) -> Iterator[Extraction]:
    """The gray baseline and both gray+ attacks on a fresh random-weight ``name``, from one
    student start, on the same query images: the rows of the comparison."""
    torch.manual_seed(0)
    model = create_clip(name, None).eval()
    backbone = seal_plus(model, name)
    held_out, teacher, start = distillation_start(backbone, name)
    attacks: list[Callable[..., Extraction]] = [
        functools.partial(entry_outputs, gate=None),  # the gray baseline
        functools.partial(entry_outputs, gate=0.1),
        entry_gradients,
    ]
    for attack in attacks:
        torch.manual_seed(2)  # the same query images for each attack
        yield attack(
            backbone,
            copy.deepcopy(start),
            queries=queries,
            held_out=held_out,
            teacher_held_out=teacher,
            steps=steps,
        )


def main() -> None:
    """Run the three distillations and print their rows."""
    parser = attack_parser(__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=512, help="images each attack queries")
    parser.add_argument("--steps", type=int, default=100, help="student steps (at least)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.model, queries=args.queries, steps=args.steps)
    print_table(f"attack on {args.model} (gray+)", rows)


if __name__ == "__main__":
    main()
