"""The server builds the initial adapters and the traffic ratio from the backbone's published
interface, and opens a backbone only to evaluate centrally (or for a method whose initial
tensors depend on the weights)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from fedgray.backbone import create_clip
from fedgray.backbone.artifact import Manifest, read_manifest
from fedgray.config import Config
from fedgray.fl.common.cache import shared_backbone, shared_data
from fedgray.fl.common.records import from_record, to_record
from fedgray.fl.serverapp import published, server
from fedgray.fl.serverapp.published import published_interface
from fedgray.owner.keys import CONTENT_KEY_FILE, SIGNING_KEY_FILE, VERIFY_KEY_FILE, generate_keys
from fedgray.owner.seal import seal
from fedgray.train.kinds import kind_of
from strategies import split_personal
from tests.helpers import micro_config, run_local


def _opened_path(config: Config) -> dict[str, torch.Tensor]:
    """The initial shared tensors as built around the opened backbone."""
    data = lambda: shared_data(config, dataset=config.data.dataset, split="test", size=40)  # noqa: E731
    state = kind_of(config.method).start(config, shared_backbone(config), data)
    shared, _ = split_personal(state, config.federation.personal)
    return from_record(to_record(shared))


def _server_may_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's openers raise: any backbone (or data in its format) it opens fails."""

    def refuse(*_: object, **__: object) -> NoReturn:
        raise AssertionError("the server opened a backbone")

    monkeypatch.setattr(server, "shared_backbone", refuse)
    monkeypatch.setattr(server, "shared_data", refuse)


def _assert_same(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    # Same operations on the same shapes from the same seed: bit-equality is the claim.
    assert set(left) == set(right)
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.mark.parametrize(
    "overrides",
    [
        ("method.name=dga",),
        ("method.name=output-lowrank",),
        ("method.name=lga", "backbone.level=gray+", "federation.personal=[image_out]"),
    ],
)
def test_initial_adapters_come_from_the_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...]
) -> None:
    config = micro_config(tmp_path, *overrides)
    expected = _opened_path(config)
    _server_may_not_open(monkeypatch)
    _assert_same(from_record(server.initial_adapters(config)), expected)


def test_a_method_that_needs_the_weights_still_opens_the_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = micro_config(tmp_path, "method.name=lora", "backbone.level=white")
    expected = _opened_path(config)
    opened: list[Config] = []

    def counting(config: Config) -> object:
        opened.append(config)
        return shared_backbone(config)

    monkeypatch.setattr(server, "shared_backbone", counting)
    _assert_same(from_record(server.initial_adapters(config)), expected)
    assert len(opened) == 1


def _sealed_micro(tmp_path: Path, *, version: int = 1) -> Config:
    """A run's config on the micro CLIP sealed at ``tmp_path/micro.fgs`` (keys made once),
    without the content key, which the server never needs unless it evaluates centrally."""
    keys = tmp_path / "keys"
    if not keys.exists():
        generate_keys(keys)
    torch.manual_seed(0)
    path = tmp_path / "micro.fgs"
    owner = {"signing_key": keys / SIGNING_KEY_FILE, "content_key": keys / CONTENT_KEY_FILE}
    model = create_clip("fedgray-micro", None)
    seal(model, path, name="fedgray-micro", level="gray", version=version, **owner)
    return micro_config(
        tmp_path,
        f"backbone.artifact={path}",
        f"backbone.verify_key={keys / VERIFY_KEY_FILE}",
        f"backbone.content_key={tmp_path / 'absent.key'}",
    )


def test_the_interface_of_an_artifact_is_read_from_its_signed_manifest(tmp_path: Path) -> None:
    config = _sealed_micro(tmp_path)
    interface = published_interface(config.backbone)
    assert interface is not None
    opened = micro_config(tmp_path)  # the same architecture, opened from its name
    expected = shared_backbone(opened).interface
    assert math.isnan(interface.logit_scale)  # a weight: not published
    assert interface.__dict__ | {"logit_scale": 0} == expected.__dict__ | {"logit_scale": 0}


def test_a_run_without_central_eval_never_opens_a_backbone_on_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ("federation.central_eval=false", "federation.num_rounds=1")
    with monkeypatch.context() as opening:  # the reference: initial adapters opened
        opening.setattr(server, "_from_interface", lambda _: None)
        reference, _, _ = run_local(micro_config(tmp_path, *overrides, name="opened"))
    _server_may_not_open(monkeypatch)
    config = micro_config(tmp_path, *overrides, name="closed")
    result, summary, _ = run_local(config)
    _assert_same(from_record(result.arrays), from_record(reference.arrays))
    assert result.backbone_bytes == shared_backbone(config).interface.parameter_count * 4
    assert summary["backbone_bytes"] == result.backbone_bytes


def test_a_run_verifies_the_manifest_once_until_the_artifact_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _sealed_micro(tmp_path)
    reads: list[str] = []

    def counting(path: str, *, verify_key: str) -> Manifest:
        reads.append(path)
        return read_manifest(path, verify_key=verify_key)

    monkeypatch.setattr(published, "read_manifest", counting)
    server.initial_adapters(config)
    size = server.backbone_bytes(config)
    assert reads == [config.backbone.artifact]
    _sealed_micro(tmp_path, version=2)  # the owner replaces the artifact: read again
    assert server.backbone_bytes(config) == size
    assert reads == [config.backbone.artifact] * 2
