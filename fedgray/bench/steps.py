"""Training steps to time: one method on a fixed batch, and one objective on a data stream.

Each step object is a zero-argument callable doing exactly what a site's local step does
(forward, loss, backward, optimiser step), so the harness in :mod:`.timing` can interleave
any mix of them. Every mode gets its own model and optimiser: no state is shared between
the modes compared.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fedgray.adapters import build_model
from fedgray.backbone import Backbone
from fedgray.data.registry import load_dataset
from fedgray.privacy import Ledger, NoisePlan, make_private, private_task
from fedgray.privacy.engine import poisson_batches
from fedgray.tasks import Task, TaskData
from fedgray.tasks.data import prepare
from fedgray.tasks.losses import contrastive_loss
from fedgray.train import batches

from .timing import peak_step_bytes, tensor_bytes

Batch = tuple[torch.Tensor, ...]
DATASET = "world/sketch"  # the built-in benchmark's shifted domain: captions of real length


def task_data(backbone: Backbone, samples: int) -> TaskData:
    """``samples`` pairs of the built-in benchmark in ``backbone``'s input format."""
    dataset = load_dataset(DATASET, split="train", size=samples, seed=0)
    return prepare(dataset, backbone.tokenize)


class MethodStep:
    """A step of ``method`` (InfoNCE on one fixed batch, AdamW): the per-method unit cost."""

    def __init__(self, backbone: Backbone, method: str, data: TaskData) -> None:
        torch.manual_seed(0)
        self.backbone, self.data = backbone, data
        self.model = build_model(backbone, method)
        self.scale = backbone.interface.logit_scale
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-6)

    def __call__(self) -> None:
        image, text = self.model(self.data.images, self.data.tokens)
        loss = contrastive_loss(image, text, scale=self.scale, caption_ids=self.data.caption_ids)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def peak_bytes(self) -> int:
        """Peak bytes of training: the backbone's weights, what the method adds (adapters,
        LoRA factors), the optimiser's state and the most one step holds at once."""
        weights = self.backbone.interface.parameter_count * 4
        own = self.backbone.module.parameters() if self.backbone.level.value == "white" else ()
        seen = {id(p) for p in own}
        added = [t for t in (*self.model.parameters(), *self.model.buffers()) if id(t) not in seen]
        if not self.optimizer.state:  # the optimiser's state exists from the first step on
            self()
        state = tensor_bytes(list(self.optimizer.state.values()))
        return weights + tensor_bytes(added) + state + peak_step_bytes(self)


class ObjectiveStep:
    """A step of ``method`` on batches drawn from ``data`` with the per-sample objective
    DP-SGD trains (``private``: through fedgray's Opacus DP-SGD on Poisson batches of that
    expected size), so that DP and non-DP differ only by DP-SGD itself. ``poisson``: the
    non-private step draws the same Poisson batches as the private one (same seed), so that
    the two compare on equal batches, not on the batch sizes one draw happened to give."""

    def __init__(
        self,
        backbone: Backbone,
        data: TaskData,
        *,
        method: str,
        batch_size: int,
        private: bool,
        poisson: bool = False,
    ) -> None:
        torch.manual_seed(0)
        self.model = build_model(backbone, method)
        self.data, self.scale = data, backbone.interface.logit_scale
        self.task: Task = private_task("retrieval", self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-3)
        self.stream: Iterator[Batch] = (
            poisson_batches(data, sample_rate=batch_size / len(data), seed=0)
            if poisson
            else batches(data, batch_size=batch_size, seed=0)
        )
        if private:
            dp = make_private(
                self.model,
                data,
                self.optimizer,
                plan=NoisePlan(noise_multiplier=1.0, sample_rate=batch_size / len(data)),
                max_grad_norm=1.0,
                ledger=Ledger("rdp"),
                seed=0,
            )
            self.optimizer, self.stream = dp.optimizer, dp.stream

    def __call__(self) -> None:
        loss = self.task.loss(self.model, next(self.stream), self.data, self.scale)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
