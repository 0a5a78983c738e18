"""CraFT's prediction refinement: a residual MLP on the class logits, trained by backprop.

The backbone is never differentiated: the MLP sees only the (detached) logits that the
black-box queries produced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PredictionRefiner(nn.Module):
    """``logits + MLP(logits)``; the last layer starts at zero, so it starts as the identity."""

    def __init__(self, classes: int, *, hidden: int = 256) -> None:
        super().__init__()
        first, last = nn.Linear(classes, hidden), nn.Linear(hidden, classes)
        self.net = nn.Sequential(first, nn.ReLU(), last)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Refined logits, same shape as ``logits`` [B, classes]."""
        return logits + self.net(logits)


def consistency(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target_logits) || softmax(logits))``, averaged over the batch.

    CraFT's prediction-consistency term: the prompt's fitness pulls the raw predictions
    towards the refined ones (``consistency(raw, refined)``) and the refiner's loss keeps
    the refined ones near the raw ones (``consistency(refined, raw)``).
    """
    return F.kl_div(
        F.log_softmax(logits, dim=-1),
        F.log_softmax(target_logits, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
