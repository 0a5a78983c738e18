"""torch's AdamW for the owner's pretraining, without updating the token-embedding rows no
caption uses until the end: the same bits, a fraction of the optimiser's work.

The text tower's token embedding is 6.3 M of the tiny CLIP's 7.6 M parameters, and the
owner's captions use a few dozen of its 49,408 rows. AdamW still updates every row each
step: eight element-wise passes over 25 MB, most of the step's optimiser time. A row no
batch reads has a zero gradient, so its moments stay exactly zero and AdamW's step leaves
it as it was, but for the decoupled weight decay, a multiplication by ``1 - lr * wd``.

:class:`UsedRowsAdamW` runs torch's own AdamW on every other parameter and on a gathered
copy of the used rows (element-wise work, with no reduction, so the same operations give
the same bits on the copy), writes those rows back after each step, and applies the
skipped multiplications to the unused rows at :meth:`~UsedRowsAdamW.finish`, in the order
AdamW would have. The weights equal those of AdamW over the whole table bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class UsedRowsAdamW:
    """AdamW over ``parameters``, of which ``table`` is read at ``rows`` only (see the module
    doc). ``optimizer`` is the torch AdamW inside: schedule its learning rate as usual.

    Every batch must read ``table`` at ``rows`` only: a row outside them with a gradient
    would be updated by its weight decay alone. Call :meth:`finish` after the last step.
    """

    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        *,
        table: torch.Tensor,
        rows: torch.Tensor,
        lr: float,
        weight_decay: float,
    ) -> None:
        self.table, self.rows = table, rows
        self.used = table.detach()[rows].clone().requires_grad_(True)
        others = [p for p in parameters if p is not table]
        self.optimizer = torch.optim.AdamW([*others, self.used], lr=lr, weight_decay=weight_decay)
        self._decays: list[float] = []  # 1 - lr * wd of each step, for the unused rows

    def zero_grad(self) -> None:
        """Drop every gradient, the table's included (the optimiser does not hold it)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.table.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step: the used rows' gradients gathered, their new values written back."""
        assert self.table.grad is not None  # backward ran since zero_grad
        self.used.grad = self.table.grad[self.rows]
        self.optimizer.step()
        self.table.index_copy_(0, self.rows, self.used)
        group = self.optimizer.param_groups[0]
        self._decays.append(1 - group["lr"] * group["weight_decay"])

    @torch.no_grad()
    def finish(self) -> None:
        """Give the unused rows the weight decay of every step taken, in order."""
        for decay in self._decays:
            self.table.mul_(decay)
        self.table.index_copy_(0, self.rows, self.used)
        self._decays.clear()
