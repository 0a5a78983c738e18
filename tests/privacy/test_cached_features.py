"""DP-SGD over cached backbone features (``privacy.cache_features``) and the small output
adapters: per-sample gradients equal single-sample passes through the whole model."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule

from fedgray.backbone import SealedBackbone
from fedgray.config import MethodConfig
from fedgray.privacy import private_task
from fedgray.privacy.features import CachedImageHead, backbone_features, cached_head
from fedgray.resolver import load_config
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

WHITENED = MethodConfig(name="output", whiten="world/photo", text_subspace=4)

# Four DP steps of batch 6 (Schedule(4, 8), train.batch_size=6), each summing per-sample
# gradients over the micro's embedding: the rounding both trainers' adapters may differ by.
STEPS_TERMS = 4 * 6 * 32


@pytest.mark.parametrize(
    "method",
    ["output", "output-scale", "output-lowrank", pytest.param(WHITENED, id="output-whitened")],
)
@pytest.mark.parametrize(
    ("task_name", "vocabulary"),
    [("retrieval", False), ("retrieval", True), ("classification", False)],
)
def test_cached_per_sample_gradients_match_single_sample_passes_through_the_backbone(
    micro: SealedBackbone,
    method: str | MethodConfig,
    task_name: str,
    vocabulary: bool,
    small_whitening_sample: None,
) -> None:
    model = perturbed(micro, method)
    data = captioned_data(micro, 6, vocabulary=vocabulary)
    task = private_task(task_name, model)
    scale = micro.interface.logit_scale
    head, cached = cached_head(model, data)
    assert cached.images.shape == (6, micro.interface.embed_dim)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(any(p is q for q in head.parameters()) for p in trainable)

    module = GradSampleModule(head, batch_first=True, loss_reduction="mean")
    task.loss(head, tuple(cached.as_dataset().tensors), cached, scale).backward()
    per_sample = [p.grad_sample.clone() for p in trainable]  # type: ignore[attr-defined]
    module._close()

    assert_single_sample_gradients(model, task, data, scale, trainable, per_sample)
    assert all(s.abs().sum() > 0 for s in per_sample)


def test_cached_text_features_equal_the_models_and_are_encoded_once(
    micro: SealedBackbone,
) -> None:
    model = perturbed(micro, "output")
    head = CachedImageHead(model)
    tokens = micro.tokenize(["a red circle", "a blue square", "a red circle"])
    calls: list[int] = []
    encode = model.bare_texts

    def counting(rows: torch.Tensor) -> torch.Tensor:
        calls.append(len(rows))
        return encode(rows)

    model.bare_texts = counting  # type: ignore[method-assign,assignment]
    first = head.encode_texts(tokens)
    again = head.encode_texts(tokens[1:])
    assert calls == [2]  # two distinct captions, each encoded once
    with torch.no_grad():
        expected = model.encode_texts(tokens)
    assert_close(first, expected, terms=reduction_terms(micro))  # batched apart
    assert torch.equal(again, first[1:])  # the cache's own rows


def _train(micro: SealedBackbone, *, cache: bool, method: str = "output") -> LocalTrainer:
    config = load_config(
        None,
        [
            *MICRO,
            f"method.name={method}",
            "privacy.enabled=true",
            "privacy.noise_multiplier=0.7",
            "privacy.max_grad_norm=0.5",
            f"privacy.cache_features={str(cache).lower()}",
            "train.batch_size=6",
            "train.lr=0.05",
        ],
    )
    model = perturbed(micro, method)
    torch.manual_seed(5)  # Opacus' noise (insecure mode) comes from torch's global generator
    return LocalTrainer(config, model, captioned_data(micro, 24), schedule=Schedule(4, 8), seed=3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cached_trainer_takes_the_same_dp_steps_and_accounts_the_same(
    micro: SealedBackbone,
) -> None:
    outcomes = []
    for cache in (False, True):
        trainer = _train(micro, cache=cache)
        start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.run()
        report = trainer.close()
        assert report is not None
        state = trainer.model.state_dict()
        outcomes.append((state, report))
        moved = sum((state[k] - start[k]).abs().sum().item() for k in start)
        assert moved > 1e-3  # the image output adapter trained
        assert torch.equal(state["text_out.weight"], start["text_out.weight"])  # frozen
    (plain, plain_report), (cached, cached_report) = outcomes
    for key in plain:  # the same batches, clipping and noise: the same adapters
        assert_close(plain[key], cached[key], terms=STEPS_TERMS)
    assert plain_report.ledger == cached_report.ledger
    assert plain_report.epsilon == cached_report.epsilon and plain_report.ledger.steps == 4


def test_cache_refuses_a_model_that_trains_before_the_backbone(micro: SealedBackbone) -> None:
    with pytest.raises(ValueError, match=r"privacy.cache_features: .*image_in"):
        _train(micro, cache=True, method="dga")


def test_features_are_cached_by_images_and_the_other_modules_values(
    micro: SealedBackbone,
) -> None:
    model = perturbed(micro, "dga")
    for name in ("image_in", "text_in", "text_out"):
        getattr(model, name).requires_grad_(False)  # frozen input adapter: cacheable
    calls: list[int] = []
    encode = model.encode_images

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return encode(images)

    model.encode_images = counting  # type: ignore[method-assign,assignment]
    images = captioned_data(micro, 5).images
    first = backbone_features(model, images)
    assert backbone_features(model, images.clone()) is first and calls == [5]  # by content
    with torch.no_grad():
        # the trained module itself changed: still the same features
        torch.nn.init.eye_(model.get_parameter("image_out.weight"))
    assert backbone_features(model, images) is first and calls == [5]
    backbone_features(model, images[:3])
    assert calls == [5, 3]  # other images
    with torch.no_grad():
        # a module before the backbone changed: new features
        torch.nn.init.normal_(model.get_parameter("image_in.convs.0.weight"), std=0.1)
    changed = backbone_features(model, images)
    assert calls == [5, 3, 5] and not close(changed, first, terms=reduction_terms(micro))
    model.image_out = None
    with torch.no_grad():
        assert_close(changed, encode(images), terms=reduction_terms(micro))
