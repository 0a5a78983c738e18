"""Registry-backed config names are checked at load time against the registries themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from fedgray.adapters import AdaptedCLIP, methods
from fedgray.backbone import Backbone
from fedgray.backbone.access import AccessLevel
from fedgray.backbone.sealed import SealedBackbone
from fedgray.cli import main
from fedgray.config import MethodConfig
from fedgray.config_schema import ConfigError, positive
from fedgray.data import partitioners
from fedgray.privacy import ledger
from fedgray.resolver import config_from_dict, load_config
from strategies import registry


@pytest.mark.parametrize(
    ("override", "field", "known"),
    [
        ("method.name=dgaa", "method.name: unknown method 'dgaa'", methods.METHODS),
        (
            "federation.strategy=fedavgg",
            "federation.strategy: unknown strategy",
            registry.STRATEGIES,
        ),
        ("data.dataset=world/sktch", "data.dataset: unknown dataset", ["world/sketch", "digits"]),
        (
            "federation.domains=[world/sketch, nope]",
            "federation.domains: unknown dataset 'nope'",
            [],
        ),
        (
            "federation.partitioner=iid2",
            "federation.partitioner: unknown",
            partitioners.PARTITIONERS,
        ),
        ("privacy.accountant=gdp", "privacy.accountant: unknown accountant", ledger.ACCOUNTANTS),
        ("backbone.level=grey", "backbone.level: unknown access level", ["black", "gray+"]),
        ("train.task=detection", "train.task: unknown task", ["retrieval", "classification"]),
    ],
)
def test_unknown_names_stop_at_load_listing_the_known_ones(
    override: str, field: str, known: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert message.startswith(field) and "\n" not in message
    assert all(name in message for name in known)


def test_the_check_reads_the_registry_not_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):
        load_config(None, ["method.name=mine"])
    monkeypatch.setitem(methods.METHODS, "mine", methods.METHODS["dga"])
    assert load_config(None, ["method.name=mine"]).method.name == "mine"


@dataclass
class BlurConfig:
    """A new method's own options, declared by its row alone."""

    SECTION: ClassVar[str] = "blur"

    width: int = field(default=3, metadata=positive())


def test_a_new_method_is_its_module_and_its_row(
    monkeypatch: pytest.MonkeyPatch, micro: SealedBackbone
) -> None:
    """No schema edit: the row's options dataclass gives ``method.blur.*`` its keys,
    defaults and checks, the builder gets them typed, and a run folder's config keeps them."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["method.blur.width=5"])
    assert str(caught.value).startswith("method.blur: unknown section (known sections: craft")
    seen: list[int] = []

    def build(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
        seen.append(options.section(BlurConfig).width)
        return AdaptedCLIP(backbone)

    row = methods.Method("blur", AccessLevel.GRAY, "a test method", build, options=BlurConfig)
    monkeypatch.setitem(methods.METHODS, "blur", row)
    config = load_config(None, ["method.name=blur", "method.blur.width=5"])
    assert config.method.section(BlurConfig) == BlurConfig(width=5)
    assert config.to_dict()["method"]["blur"] == {"width": 5}
    assert config_from_dict(config.to_dict()) == config
    assert load_config(None, []).method.section(BlurConfig).width == 3
    methods.build_model(micro, config.method)
    assert seen == [5]
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["method.blur.width=0"])
    assert str(caught.value) == "method.blur.width: must be > 0, got 0"


def test_folder_datasets_and_registered_names_load() -> None:
    config = load_config(
        None,
        [
            "data.dataset=folder:/data/mine",
            "federation.strategy=krum",
            "privacy.accountant=prv",
            "method.name=craft",
            "federation.domains=[world/sketch, world/noisy]",
        ],
    )
    assert config.data.dataset == "folder:/data/mine" and config.federation.strategy == "krum"


def test_cli_stops_a_misspelt_method_at_load_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: dga\n")
    assert main(["adapt", str(path), "--set", "method.name=dgaa", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedgray: error: method.name: unknown method 'dgaa' (known: ")
    assert "\n" not in err and all(name in err for name in methods.METHODS)
    assert not list(tmp_path.glob("adapt*"))  # nothing ran, no run folder


@pytest.mark.parametrize("command", ["pretrain", "seal"])
def test_the_owners_commands_check_names_too(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "pretrain": [],
        "seal": ["--name", "fedgray-micro", "--pretrained", "none", "--signing-key", "k"]
        + ["--content-key", "c", "--out", str(tmp_path / "a")],
    }[command]
    assert main([command, "--set", "method.name=dgaa", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedgray: error: method.name: unknown method 'dgaa' (known: ")
    assert "\n" not in err and not (tmp_path / "a").exists()
