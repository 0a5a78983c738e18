"""``privacy.objective: text-out``: per-sample retrieval with the text output module trained
against a public pool of negatives. Each sample's gradient depends on that sample (and public
data) only, and the cached path gives the same per-sample gradients as the whole model."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule

from fedgray.backbone import SealedBackbone
from fedgray.privacy import private_task
from fedgray.privacy.features import cached_head
from fedgray.resolver import load_config
from fedgray.tasks.data import TaskData
from fedgray.train.schedule import Schedule
from fedgray.train.trainer import LocalTrainer
from tests.helpers import (
    MICRO,
    assert_close,
    assert_single_sample_gradients,
    captioned_data,
    close,
    perturbed,
    reduction_terms,
)

# Four DP steps of batch 6 (Schedule(4, 8), train.batch_size=6), each summing per-sample
# gradients over the micro's embedding: the rounding both trainers' adapters may differ by.
STEPS_TERMS = 4 * 6 * 32


def _per_sample(
    model: torch.nn.Module, task_loss, data: TaskData, scale: float
) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    trainable = [p for p in model.parameters() if p.requires_grad]
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    task_loss(model, tuple(data.as_dataset().tensors), data, scale).backward()
    samples = [p.grad_sample.clone() for p in trainable]  # type: ignore[attr-defined]
    module._close()
    for p in trainable:
        p.grad = None
    return samples


def test_text_out_trains_the_text_output_module_only_on_the_text_side(
    micro: SealedBackbone,
) -> None:
    model = perturbed(micro, "dga")
    private_task("retrieval", model, "text-out")
    assert all(p.requires_grad for p in model.text_out.parameters())  # type: ignore[union-attr]
    assert not any(p.requires_grad for p in model.text_in.parameters())  # type: ignore[union-attr]
    private_task("retrieval", perturbed(micro), "frozen-text")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("vocabulary", [False, True])
@pytest.mark.parametrize("cached", [False, True])
def test_text_out_per_sample_gradients_are_single_sample_gradients_and_independent(
    micro: SealedBackbone, vocabulary: bool, cached: bool
) -> None:
    model = perturbed(micro)
    data = captioned_data(micro, 6, vocabulary=vocabulary)
    task = private_task("retrieval", model, "text-out")
    scale = micro.interface.logit_scale
    stepped, stepped_data = cached_head(model, data) if cached else (model, data)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {
        id(p) for m in (model.image_out, model.text_out) for p in m.parameters()
    }  # type: ignore[union-attr]
    per_sample = _per_sample(stepped, task.loss, stepped_data, scale)
    assert all(s.abs().sum() > 0 for s in per_sample)

    assert_single_sample_gradients(model, task, data, scale, trainable, per_sample)
    model.zero_grad(set_to_none=True)

    # another image and caption for sample 0: every other sample's gradient is unchanged
    changed_images = stepped_data.images.clone()
    changed_images[0] = changed_images[0] * -1.0 + 0.3
    changed_tokens = stepped_data.tokens.clone()
    changed_tokens[0] = stepped_data.tokens[1]
    changed = TaskData(**{**vars(stepped_data), "images": changed_images, "tokens": changed_tokens})
    again = _per_sample(stepped, task.loss, changed, scale)
    for before, after in zip(per_sample, again, strict=True):
        assert_close(before[1:], after[1:], terms=reduction_terms(micro))
        assert not close(before[0], after[0], terms=reduction_terms(micro))


def test_text_out_refuses_what_it_cannot_train(micro: SealedBackbone) -> None:
    with pytest.raises(ValueError, match="linear text output module"):
        private_task("retrieval", perturbed(micro, "output-scale"), "text-out")
    with pytest.raises(ValueError, match="no form for train.task 'classification'"):
        private_task("classification", perturbed(micro), "text-out")
    with pytest.raises(ValueError, match="privacy.objective: 'nope'"):
        private_task("retrieval", perturbed(micro), "nope")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_text_out_cached_and_uncached_dp_steps_agree(micro: SealedBackbone) -> None:
    outcomes = []
    for cache in (False, True):
        config = load_config(
            None,
            [
                *MICRO,
                "method.name=output",
                "privacy.enabled=true",
                "privacy.noise_multiplier=0.7",
                "privacy.max_grad_norm=0.5",
                "privacy.objective=text-out",
                f"privacy.cache_features={str(cache).lower()}",
                "train.batch_size=6",
                "train.lr=0.05",
            ],
        )
        model = perturbed(micro)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(5)  # Opacus' noise (insecure mode) comes from torch's global generator
        data = captioned_data(micro, 24, vocabulary=True)
        trainer = LocalTrainer(config, model, data, schedule=Schedule(4, 8), seed=3)
        trainer.run()
        report = trainer.close()
        assert report is not None and report.ledger.steps == 4
        state = trainer.model.state_dict()
        assert not close(state["text_out.weight"], start["text_out.weight"], terms=STEPS_TERMS)
        outcomes.append((state, report))
    (plain, plain_report), (cached, cached_report) = outcomes
    for key in plain:
        assert_close(plain[key], cached[key], terms=STEPS_TERMS)
    assert plain_report.ledger == cached_report.ledger
    assert plain_report.epsilon == cached_report.epsilon


@pytest.mark.parametrize("objective", ["frozen-text", "text-out"])
def test_loss_scale_replaces_the_backbones_logit_scale(
    micro: SealedBackbone, objective: str
) -> None:
    data = captioned_data(micro, 6, vocabulary=True)
    batch = tuple(data.as_dataset().tensors)
    fixed = private_task("retrieval", perturbed(micro), objective, scale=7.0)
    plain = private_task("retrieval", perturbed(micro), objective)
    with torch.no_grad():
        at_seven = plain.loss(perturbed(micro), batch, data, 7.0)
        for logit in (1.0, 50.0):  # whatever the trainer passes, the loss uses 7
            assert_close(
                fixed.loss(perturbed(micro), batch, data, logit), at_seven, terms=len(batch[0])
            )
        assert not close(
            plain.loss(perturbed(micro), batch, data, 50.0), at_seven, terms=len(batch[0])
        )
