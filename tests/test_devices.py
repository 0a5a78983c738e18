"""``train.device`` and ``train.precision``: where training runs and at which precision.

The CPU tests run everywhere; bfloat16 autocast is exercised on the CPU (torch supports
it there), which covers the mixed-precision paths a GPU run takes. The CUDA tests skip
without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedgray.adapt import adapt
from fedgray.adapters import build_model
from fedgray.backbone import load_sealed
from fedgray.config import Config, ConfigError
from fedgray.devices import autocast, resolve_device
from fedgray.materials import load_task_data, open_backbone
from fedgray.resolver import load_config
from fedgray.train.local import batches
from fedgray.train.schedule import Schedule
from fedgray.train.trainer import LocalTrainer
from tests.helpers import MICRO, assert_close

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _config(tmp_path: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            *MICRO,
            "data.train_size=64",
            "data.test_size=32",
            "train.steps=4",
            "train.eval_every=2",
            "train.batch_size=16",
            f"output.root={tmp_path}",
            *overrides,
        ],
    )


def test_auto_is_the_gpu_when_there_is_one_and_cuda_without_one_is_one_line() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    if not CUDA:
        with pytest.raises(ConfigError, match=r"^train.device: cuda, but torch sees no CUDA"):
            resolve_device("cuda")


def test_unknown_device_or_precision_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="train.device"):
        load_config(None, ["train.device=tpu"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["train.precision=float16"])


def test_precision_auto_is_bfloat16_on_cuda_and_float32_on_the_cpu() -> None:
    layer = torch.nn.Linear(4, 4)
    with autocast(torch.device("cpu"), "auto"):
        assert layer(torch.rand(2, 4)).dtype == torch.float32
    with autocast(torch.device("cpu"), "bfloat16"):
        assert layer(torch.rand(2, 4)).dtype == torch.bfloat16
    if CUDA:
        with autocast(torch.device("cuda"), "auto"):
            assert layer.cuda()(torch.rand(2, 4, device="cuda")).dtype == torch.bfloat16


def test_batches_index_the_data_in_a_dataloaders_order() -> None:
    """Batches are gathered by index (on the data's device) in the DataLoader's order."""
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None)
    config = load_config(None, [*MICRO, "data.train_size=37"])
    data = load_task_data(config.data, backbone, split="train")
    loader = torch.utils.data.DataLoader(
        data.as_dataset(),
        batch_size=8,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(5),
    )
    expected = [b for _ in range(3) for b in loader]  # three epochs of four batches
    stream = batches(data, batch_size=8, seed=5)
    for batch in expected:
        assert all(torch.equal(a, b) for a, b in zip(next(stream), batch, strict=True))


def _trainer(config: Config) -> LocalTrainer:
    torch.manual_seed(0)
    backbone = open_backbone(config, progress=False)
    model = build_model(backbone, config.method)
    with torch.no_grad():  # off the identity: every step's gradient is non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    data = load_task_data(config.data, backbone, split="train")
    schedule = Schedule.single_site(config.train)
    return LocalTrainer(config, model, data, schedule=schedule, seed=0)


def test_bfloat16_steps_train_float32_weights_close_to_float32_steps(tmp_path: Path) -> None:
    """Autocast runs the forward in bfloat16 (the sealed node included); the adapters, their
    gradients and the optimiser stay float32, and the losses track float32's."""
    runs = {}
    for precision in ("float32", "bfloat16"):
        trainer = _trainer(_config(tmp_path, f"train.precision={precision}"))
        runs[precision] = (trainer.run().losses, trainer.model)
    (full, _), (half, model) = runs["float32"], runs["bfloat16"]
    assert full != half  # the bfloat16 forward really ran
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert_close(half, full, terms=8, dtype=torch.bfloat16)  # a few steps of bfloat16 forwards


def test_dp_sgd_steps_stay_float32_whatever_the_precision(tmp_path: Path) -> None:
    dp = ["privacy.enabled=true", "privacy.noise_multiplier=1.0", "train.precision=bfloat16"]
    weights = []
    for precision in ("float32", "bfloat16"):
        config = _config(tmp_path, *dp[:2], f"train.precision={precision}")
        trainer = _trainer(config)
        trainer.run()
        trainer.close()
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)


def test_a_retained_graph_recomputes_under_the_forwards_autocast() -> None:
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None)
    pixels = torch.rand(3, 3, 32, 32, requires_grad=True)
    with autocast(torch.device("cpu"), "bfloat16"):
        loss = backbone.encode_image(pixels).float().pow(2).sum()
    loss.backward(retain_graph=True)
    first, pixels.grad = pixels.grad, None
    loss.backward()
    assert first is not None and torch.equal(pixels.grad, first)


@needs_cuda
def test_adapt_on_cuda_puts_backbone_adapters_and_data_on_the_gpu(tmp_path: Path) -> None:
    config = _config(tmp_path, "train.device=cuda", "output.name=cuda")
    backbone = open_backbone(config, progress=False)
    assert backbone.device.type == "cuda"
    assert load_task_data(config.data, backbone, split="test").images.is_cuda
    assert all(p.is_cuda for p in build_model(backbone, config.method).parameters())
    result = adapt(config, progress=False, echo=lambda _: None)
    assert result.adapted.keys() == result.zero_shot.keys()


def test_secure_noise_off_the_cpu_is_one_line_before_any_step() -> None:
    """torchcsprng's generator draws on the CPU: secure mode on another device is refused."""
    from fedgray.privacy import Ledger, NoisePlan, make_private

    module = torch.nn.Linear(2, 2, device="meta")  # stands for a module on a GPU
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    plan = NoisePlan(noise_multiplier=1.0, sample_rate=1.0)
    torch.manual_seed(0)
    backbone = load_sealed("fedgray-micro", None)
    data = load_task_data(
        load_config(None, [*MICRO, "data.train_size=4"]).data, backbone, split="train"
    )
    with pytest.raises(ConfigError, match=r"^privacy.secure_mode: torchcsprng's generator"):
        make_private(
            module, data, optimizer, plan=plan, max_grad_norm=1.0, ledger=Ledger("rdp"),
            seed=0, secure_mode=True,
        )  # fmt: skip
