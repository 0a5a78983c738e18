"""Where DP-SGD's randomness comes from: seeded generators by default, Opacus' secure mode on
request; Opacus' check that optimised parameters belong to the module."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

from fedgray.adapt import adapt
from fedgray.adapters import build_model
from fedgray.backbone import load_sealed
from fedgray.config_schema import ConfigError
from fedgray.privacy import Ledger, NoisePlan, make_private
from fedgray.privacy.randomness import INSECURE
from fedgray.resolver import load_config
from fedgray.runs import load_adapters
from tests.helpers import MICRO

DP = ["privacy.enabled=true", "privacy.noise_multiplier=1.0"]


def _adapters(tmp_path: Path, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    config = load_config(
        None,
        [
            *MICRO,
            *DP,
            "data.train_size=32",
            "train.steps=2",
            "train.eval_every=2",
            f"output.root={tmp_path}",
            f"output.name={name}",
            *overrides,
        ],
    )
    adapt(config, progress=False, echo=lambda _: None)
    return load_adapters(tmp_path / name / "adapters.pt", backbone="fedgray-micro")[0]


def _fake_csprng(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in for torchcsprng (not installable for this torch): a generator seeded from
    the OS's entropy, recording the device it was asked for."""
    devices: list[str] = []

    def create_random_device_generator(device: str) -> torch.Generator:
        devices.append(device)
        return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))

    module = types.ModuleType("torchcsprng")
    module.create_random_device_generator = create_random_device_generator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchcsprng", module)
    return devices


def test_default_randomness_repeats_from_the_seeds_and_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Secure RNG turned off"):
        a = _adapters(tmp_path, "a")
    b = _adapters(tmp_path, "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "privacy.secure_mode" in INSECURE


def test_secure_mode_draws_from_the_secure_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = _fake_csprng(monkeypatch)
    a = _adapters(tmp_path, "a", "privacy.secure_mode=true")
    b = _adapters(tmp_path, "b", "privacy.secure_mode=true")
    assert devices == ["/dev/urandom", "/dev/urandom"]
    # Same seeds, different noise and batches: the randomness is not the seeds' any more.
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_secure_mode_without_torchcsprng_stops_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchcsprng", None)  # import fails
    with pytest.raises(ConfigError, match="^privacy.secure_mode: needs the torchcsprng") as caught:
        _adapters(tmp_path, "a", "privacy.secure_mode=true")
    assert "\n" not in str(caught.value)


def test_parameters_outside_the_module_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(load_sealed("fedgray-micro", None, level="gray"), "dga")
    stray = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([*model.parameters(), stray])
    with pytest.raises(ValueError, match="Module parameters are different than optimizer"):
        make_private(
            model,
            None,  # type: ignore[arg-type]  # refused before the data is looked at
            optimizer,
            plan=NoisePlan(1.0, 0.1),
            max_grad_norm=1.0,
            ledger=Ledger("rdp"),
            seed=0,
        )
