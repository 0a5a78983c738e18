"""The benchmark's sections: each measures its modes side by side and returns figures.

A :class:`Figure` is a ratio of two modes measured in the same run (or a per-unit cost
such as bytes sent per byte of backbone), with the issue's goal where it sets one. Times
are the median over rounds of the ratio within a round (:func:`.timing.paired_ratio`).
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedgray.adapters import AdaptedCLIP, build_model
from fedgray.backbone import (
    Backbone,
    SealedBackbone,
    create_clip,
    get_tokenizer,
)
from fedgray.backbone.trim import untrimmed
from fedgray.fl.common.compression import encode_down, encode_up, snap
from fedgray.fl.common.records import record_bytes, to_record
from fedgray.privacy.features import cached_head
from fedgray.tasks import TASKS, TaskData
from fedgray.train import batches

from .steps import MethodStep, ObjectiveStep, task_data
from .timing import interleaved, paired_ratio

Tokenizer = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Figure:
    """One measured ratio (``unit`` "x") or fraction (``unit`` "%"), lower is better for
    those that carry a goal; or a rate (``/s``, ``TFLOP/s``)."""

    section: str
    name: str
    value: float
    unit: str = "x"
    goal: float | None = None  # the bound on ``value``, when it sets one
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None: no goal)."""
        return None if self.goal is None else self.value <= self.goal


@dataclass(frozen=True)
class Sizes:
    """How much each section measures: ``--quick`` keeps CI under a minute."""

    models: tuple[tuple[str, int], ...]  # (open_clip model, batch) for the method steps
    warmup: int
    reps: int
    site_samples: int  # one site's data for the DP, isolation and cached-epoch sections
    site_batch: int
    federation: tuple[int, int] = (3, 2)  # (sites, local steps) of the federation rounds
    # (warm-up, timed) steps of the DP section: its steps are short and their Poisson batches
    # vary in size (a size not run before costs more the first time), so it takes more
    privacy_steps: tuple[int, int] = (1, 3)


QUICK = Sizes(models=(("fedgray-tiny", 8),), warmup=1, reps=3, site_samples=64, site_batch=16)
FULL = Sizes(
    models=(("fedgray-tiny", 32), ("ViT-B-32", 32)),
    warmup=1,
    reps=3,
    site_samples=512,
    site_batch=32,
    federation=(8, 10),
    privacy_steps=(10, 30),
)
SITE_MODEL = "fedgray-tiny"  # the model the quickstart federates


@functools.cache
def base_model(name: str) -> tuple[torch.nn.Module, Tokenizer]:
    """``name`` with random weights (the same compute as pretrained), seeded, built once."""
    torch.manual_seed(0)
    return create_clip(name, None), get_tokenizer(name)


def random_backbone(name: str, level: str, device: torch.device | str = "cpu") -> SealedBackbone:
    """A sealed copy of :func:`base_model` on ``device``: modes that change it (full
    fine-tuning, LoRA) get their own copy, so that nothing one mode does reaches another."""
    model, tokenizer = base_model(name)
    copied = copy.deepcopy(model)
    return SealedBackbone(copied, tokenizer, name=name, level=level, device=device)


def timed(steps: dict[str, Callable[[], object]], sizes: Sizes) -> dict[str, list[float]]:
    """Interleaved step times at ``sizes``' warm-up and repetitions."""
    return interleaved(steps, warmup=sizes.warmup, reps=sizes.reps)


def _untrimmed(step: MethodStep) -> None:
    """``step`` with the text tower run at its full context length."""
    with untrimmed():
        step()


def methods(name: str, batch: int, sizes: Sizes) -> list[Figure]:
    """(a) and (c): DGA, LoRA and output-only against full fine-tuning, time and memory, and
    what each sends per round against the backbone's size."""
    gray = random_backbone(name, "gray")
    data = task_data(gray, batch)
    steps = {
        "dga": MethodStep(gray, "dga", data),
        "full": MethodStep(random_backbone(name, "white"), "full", data),
        "lora": MethodStep(random_backbone(name, "white"), "lora", data),
        "output": MethodStep(gray, "output", data),
    }
    full_context = functools.partial(_untrimmed, MethodStep(gray, "dga", data))
    times = timed({**steps, "dga untrimmed": full_context}, sizes)
    where = f"{name}, batch {batch}, {gray.interface.image_size} px"
    section = f"training step ({where})"
    figures = [
        Figure(
            section,
            "DGA / full fine-tuning, time",
            paired_ratio(times["dga"], times["full"]),
            goal=0.7,
        ),
        Figure(
            section, "LoRA / full fine-tuning, time", paired_ratio(times["lora"], times["full"])
        ),
        Figure(
            section,
            "output-only / full fine-tuning, time",
            paired_ratio(times["output"], times["full"]),
        ),
    ]
    figures.append(
        Figure(
            section,
            "DGA, text trimmed / full context, time",
            paired_ratio(times["dga"], times["dga untrimmed"]),
            note=f"text batch cut to its longest caption (context {gray.interface.context_length})",
        )
    )
    peak = {mode: step.peak_bytes() for mode, step in steps.items()}
    figures += [
        Figure(
            section, "DGA / full fine-tuning, peak memory", peak["dga"] / peak["full"], goal=0.5
        ),
        Figure(section, "LoRA / full fine-tuning, peak memory", peak["lora"] / peak["full"]),
    ]
    backbone_bytes = gray.interface.parameter_count * 4
    traffic = f"bytes per site per round, down + up ({name})"
    for mode in ("dga", "output", "lora"):
        # Each way: a site receives the global state and sends back its update, alike in size.
        sent = record_bytes(to_record(steps[mode].model.state_dict()))
        figures.append(
            Figure(
                traffic,
                f"{mode} / backbone",
                100 * 2 * sent / backbone_bytes,
                "%",
                0.5 if mode == "dga" else None,
                note=f"{sent:,} bytes each way; backbone {backbone_bytes:,}",
            )
        )
    state = steps["dga"].model.state_dict()  # federation.compression: int8
    down = record_bytes(encode_down(snap(state)))
    up = record_bytes(encode_up(state, {k: torch.zeros_like(v) for k, v in state.items()}, {})[0])
    figures.append(
        Figure(
            traffic,
            "dga, int8 up + float16 down / backbone",
            100 * (down + up) / backbone_bytes,
            "%",
            0.5,
            note=f"{down:,} bytes down, {up:,} up (federation.compression: int8)",
        )
    )
    return figures


def privacy(sizes: Sizes) -> list[Figure]:
    """(b) A DP-SGD step against the same non-private step (same per-sample objective,
    adapters and batches: both draw the same Poisson batches, so that the ratio is DP-SGD's
    per-sample gradients, clipping, noise and accounting, not the sizes one draw gave)."""
    backbone = random_backbone(SITE_MODEL, "gray")
    data = task_data(backbone, sizes.site_samples)
    steps = {
        mode: ObjectiveStep(
            backbone,
            data,
            method="dga",
            batch_size=sizes.site_batch,
            private=mode == "dp",
            poisson=True,
        )
        for mode in ("plain", "dp")
    }
    warmup, reps = sizes.privacy_steps
    times = interleaved(dict(steps), warmup=warmup, reps=reps)
    section = f"privacy and isolation ({SITE_MODEL}, DGA, batch {sizes.site_batch})"
    return [
        Figure(
            section,
            "DP-SGD / non-private step",
            paired_ratio(times["dp"], times["plain"]),
            goal=1.2,
            note=(
                "per-sample gradients, clipping, noise, accountant; both on the same "
                f"Poisson batches, {warmup} warm-up and {reps} timed steps each"
            ),
        ),
    ]


def _epoch(model: torch.nn.Module, data: TaskData, batch: int, scale: float) -> Callable[[], None]:
    """One epoch of output-side training (retrieval loss, AdamW) over ``data``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    stream = batches(data, batch_size=batch, seed=0)
    task = TASKS["retrieval"]

    def epoch() -> None:
        for _ in range(len(data) // batch):
            loss = task.loss(model, next(stream), data, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def _image_output(backbone: Backbone) -> AdaptedCLIP:
    """Method ``output`` with its text side frozen: the image output module trains alone."""
    torch.manual_seed(0)
    model = build_model(backbone, "output")
    if model.text_out is not None:
        model.text_out.requires_grad_(False)
    return model


def cached_features(sizes: Sizes) -> list[Figure]:
    """(d) An epoch of output-side training over cached backbone features (the cache of
    :mod:`fedgray.privacy.features`) against the same epoch through the backbone."""
    backbone = random_backbone(SITE_MODEL, "gray")
    data = task_data(backbone, sizes.site_samples)
    scale = backbone.interface.logit_scale
    started = time.perf_counter()
    head, features = cached_head(_image_output(backbone), data)
    caching = time.perf_counter() - started
    epochs = {
        "uncached": _epoch(_image_output(backbone), data, sizes.site_batch, scale),
        "cached": _epoch(head, features, sizes.site_batch, scale),
    }
    times = timed(dict(epochs), sizes)
    section = (
        f"output-side training ({SITE_MODEL}, {sizes.site_samples} samples, "
        f"batch {sizes.site_batch})"
    )
    return [
        Figure(
            section,
            "cached / uncached features, per epoch",
            paired_ratio(times["cached"], times["uncached"]),
            goal=0.1,
        ),
        Figure(
            section,
            "computing the cache / one uncached epoch",
            caching / statistics.median(times["uncached"]),
            note="once per site and backbone, reused across rounds",
        ),
    ]
