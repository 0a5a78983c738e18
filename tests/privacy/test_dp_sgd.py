"""DP-SGD on the adapters: per-sample gradients through the sealed backbone, adapter-only steps."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule

from fedgray.adapters import build_model
from fedgray.backbone import SealedBackbone, load_sealed
from fedgray.config import PrivacyConfig
from fedgray.privacy import Ledger, NoisePlan, make_private, plan_noise, private_task
from fedgray.train import train_steps
from tests.helpers import VOCABULARY, assert_close, captioned_data, close


@pytest.fixture(scope="module")
def micro() -> SealedBackbone:
    torch.manual_seed(0)
    return load_sealed("fedgray-micro", None, level="gray")


def _perturbed_dga(backbone: SealedBackbone) -> torch.nn.Module:
    model = build_model(backbone, "dga")
    with torch.no_grad():  # away from the identity, so that every gradient is non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    ("task_name", "vocabulary"),
    [("retrieval", False), ("retrieval", True), ("classification", False)],
)
def test_per_sample_gradients_of_the_input_adapter_match_single_sample_passes(
    micro: SealedBackbone, task_name: str, vocabulary: bool
) -> None:
    torch.manual_seed(2)
    model = _perturbed_dga(micro)
    data = captioned_data(micro, n=6, vocabulary=vocabulary)
    task = private_task(task_name, model)
    scale = micro.interface.logit_scale
    conv = model.image_in.convs[0].weight
    batch = tuple(t for t in data.as_dataset().tensors)

    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    task.loss(model, batch, data, scale).backward()
    per_sample = conv.grad_sample.clone()
    module._close()

    for i in range(len(data)):
        model.zero_grad(set_to_none=True)
        task.loss(model, tuple(t[i : i + 1] for t in batch), data, scale).backward()
        error = (per_sample[i] - conv.grad).norm() / conv.grad.norm()
        assert error < 1e-5, f"sample {i}: relative error {error:.2e}"
    assert per_sample.abs().sum() > 0


def test_private_retrieval_takes_every_other_public_caption_as_a_negative(
    micro: SealedBackbone,
) -> None:
    torch.manual_seed(4)
    model = _perturbed_dga(micro)
    data = captioned_data(micro, n=1, vocabulary=True)  # one sample: "a red circle"
    task = private_task("retrieval", model)
    batch = tuple(data.as_dataset().tensors)
    scale = micro.interface.logit_scale
    with torch.no_grad():
        loss = task.loss(model, batch, data, scale)
        image = torch.nn.functional.normalize(model.encode_images(data.images), dim=-1)
        texts = torch.nn.functional.normalize(model.encode_texts(data.public_tokens), dim=-1)
    logits = scale * image @ texts.T  # column 0 is its own caption, the positive
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
    assert_close(loss, expected, terms=len(VOCABULARY))
    no_vocabulary = captioned_data(micro, n=1)  # the fallback: class prompts of the other classes
    assert not close(task.loss(model, batch, no_vocabulary, scale), loss, terms=len(VOCABULARY))


@pytest.mark.parametrize("task_name", ["retrieval", "classification"])
def test_dp_objectives_freeze_the_text_side(micro: SealedBackbone, task_name: str) -> None:
    model = build_model(micro, "dga")
    private_task(task_name, model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("text_")}
    with pytest.raises(ValueError, match="no per-sample objective"):
        private_task("captioning", model)


def test_a_dp_round_changes_only_adapters_and_counts_its_steps(micro: SealedBackbone) -> None:
    torch.manual_seed(3)
    model = build_model(micro, "dga")
    data = captioned_data(micro)
    task = private_task("retrieval", model)
    probe = data.images[:4]
    with torch.no_grad():
        bare = micro.encode_image(probe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ledger = Ledger("rdp")
    private = make_private(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        plan=NoisePlan(noise_multiplier=1.0, sample_rate=0.5),
        max_grad_norm=1.0,
        ledger=ledger,
        seed=0,
    )
    train_steps(model, task, data, private.stream, private.optimizer, steps=3, scale=1.0)
    private.close()
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(after[k], before[k])}
    assert changed == {k for k in before if k.startswith("image_")}  # noise reaches each one
    with torch.no_grad():
        assert torch.equal(micro.encode_image(probe), bare)
    assert private.ledger().history == ((1.0, 0.5, 3),)
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_target_epsilon_is_reached_over_the_whole_planned_run() -> None:
    privacy = PrivacyConfig(enabled=True, target_epsilon=4.0, delta=1e-5)
    plan = plan_noise(privacy, num_samples=200, batch_size=20, total_steps=60)
    assert plan.sample_rate == 0.1
    spent = Ledger("rdp", ((plan.noise_multiplier, 0.1, 60),)).epsilon(1e-5)
    assert 3.9 < spent <= 4.0
    fixed = PrivacyConfig(enabled=True, noise_multiplier=1.3)
    assert plan_noise(fixed, num_samples=10, batch_size=20, total_steps=5) == NoisePlan(1.3, 1.0)
