"""DP-SGD's per-sample gradients: fedgray's layer subclasses use Opacus' layer formulas
(not functorch), and a clipped, noised step equals Opacus' own ``GradSampleModule`` step."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from fedgray.adapters import build_model
from fedgray.adapters.modules import OutputAdapter
from fedgray.backbone import SealedBackbone
from fedgray.privacy import Ledger, NoisePlan, make_private, private_task
from fedgray.privacy.grad_samplers import layer_type
from tests.helpers import assert_close, captioned_data


class _Shifted(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1.0


class _Gated(nn.Linear):
    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim)
        self.gate = nn.Parameter(torch.ones(1))


def test_only_layer_subclasses_that_keep_the_layers_function_share_its_sampler() -> None:
    samplers = GradSampleModule.GRAD_SAMPLERS
    assert layer_type(OutputAdapter(4), samplers) is nn.Linear
    assert layer_type(nn.Conv2d(3, 3, 3), samplers) is nn.Conv2d
    assert layer_type(_Shifted(4, 4), samplers) is _Shifted  # own forward: functorch
    assert layer_type(_Gated(4), samplers) is _Gated  # a parameter the formula misses
    assert layer_type(nn.Sequential(nn.Linear(2, 2)), samplers) is nn.Sequential


def _perturbed_dga(backbone: SealedBackbone, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(backbone, "dga")
    with torch.no_grad():  # away from the identity, so that every gradient is non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("max_grad_norm", [1e-3, 1e3])  # every sample clipped / none
def test_a_dp_step_equals_opacus_reference_step(
    micro: SealedBackbone, max_grad_norm: float
) -> None:
    data = captioned_data(micro, n=6, vocabulary=True)
    batch = tuple(data.as_dataset().tensors)
    scale = micro.interface.logit_scale
    plan = NoisePlan(noise_multiplier=1.3, sample_rate=0.5)
    grads = []
    for reference in (True, False):
        model = _perturbed_dga(micro, seed=2)
        task = private_task("retrieval", model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        base = torch.optim.SGD(trainable, lr=0.0)
        if reference:  # Opacus as it comes: its GradSampleModule and DPOptimizer
            module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
            optimizer = DPOptimizer(
                base,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=max_grad_norm,
                expected_batch_size=3,
                loss_reduction="mean",
            )
        else:
            with pytest.warns(UserWarning, match="Secure RNG turned off"):
                private = make_private(
                    model,
                    data,
                    base,
                    plan=plan,
                    max_grad_norm=max_grad_norm,
                    ledger=Ledger("rdp"),
                    seed=0,
                )
            module, optimizer = private.module, private.optimizer
        task.loss(model, batch, data, scale).backward()
        samples = [p.grad_sample.clone() for p in trainable]  # type: ignore[attr-defined]
        torch.manual_seed(7)  # the noise: torch's global generator, same seed
        optimizer.step()
        assert hasattr(model.image_out, "ft_compute_sample_grad") == reference  # functorch
        grads.append(([p.grad.clone() for p in trainable if p.grad is not None], samples))
        module._close()
    (reference_grads, reference_samples), (grads_now, samples_now) = grads
    assert len(grads_now) == len(reference_grads) == 6
    for now, then in zip(
        [*samples_now, *grads_now], [*reference_samples, *reference_grads], strict=True
    ):
        assert_close(now, then, terms=len(batch[0]))  # functorch's sums against Opacus' own
