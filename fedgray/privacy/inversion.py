"""What an honest-but-curious server reads from a plain update of a linear output adapter.

A linear layer ``out = W x + b`` whose loss is summed (or averaged) over samples gets, from
sample ``i``, ``delta_i x_i^T`` in W's gradient and ``delta_i`` in b's (``delta_i`` the
loss's gradient at the output). Row ``k`` of W's gradient divided by entry ``k`` of b's is
therefore ``sum_i delta_ik x_i / sum_i delta_ik``: from one sample's update exactly its
input (Phong et al. 2017; Geiping et al. 2020, section 3), from a batch a different mixture
of the inputs per row. One SGD step's update is ``-lr`` times that gradient, which the
ratio cancels. The server needs nothing but the update: no backbone, no data.

Quality is measured against the site's true inputs: for each true input, the best cosine
similarity any recovered row reaches. The same measure from public data alone (the
owner's public images' features, say) is the prior an attacker has without any update;
a defence (SecAgg+'s sum, DP's clipping and noise) works when the update lifts the
reconstruction no higher than that prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_BIAS = 1e-12  # rows whose bias entry moved less carry no usable ratio


def invert_linear(weight_update: torch.Tensor, bias_update: torch.Tensor) -> torch.Tensor:
    """The inputs [R, D_in] that a linear layer's update (weight [D_out, D_in], bias
    [D_out]) reveals: one candidate per row whose bias entry moved."""
    usable = bias_update.abs() > MIN_BIAS
    return weight_update[usable] / bias_update[usable, None]


def best_cosine(
    truth: torch.Tensor, candidates: torch.Tensor, *, center: torch.Tensor | None = None
) -> torch.Tensor:
    """For each true input [N, D], the highest cosine similarity of any candidate [R, D]
    (the sign counts: a ratio recovers the input, not its negation), both taken relative
    to ``center`` [D] when given: backbone features share a large common part, which
    makes any guess near their mean look close to every input; the public mean is known
    to everyone, so only what lies beyond it counts as recovered."""
    if len(candidates) == 0:
        return torch.full((len(truth),), -1.0)
    if center is not None:
        truth, candidates = truth - center, candidates - center
    return (F.normalize(truth, dim=-1) @ F.normalize(candidates, dim=-1).T).max(dim=1).values
