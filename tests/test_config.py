"""Config loading: defaults, overrides, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedgray.config import Config, load_config, save_config
from fedgray.config_schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_every_shipped_config_loads() -> None:
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        assert isinstance(load_config(path), Config)


def test_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "train:\n  steps: 7\n"), ["train.lr=0.5", "backbone.level=white"]
    )
    assert config.train.steps == 7
    assert config.train.lr == 0.5
    assert config.backbone.level == "white"
    assert config.train.batch_size == Config().train.batch_size


def test_integer_is_accepted_for_a_float(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "train:\n  lr: 1\n")).train.lr == 1.0


def test_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 1e-5 as the string "1e-5"
    config = load_config(write(tmp_path, "privacy:\n  delta: 1e-5\n"), ["train.lr=3E-4"])
    assert (config.privacy.delta, config.train.lr) == (1e-5, 3e-4)
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'e-4'"):
        load_config(None, ["train.lr=e-4"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  stpes: 3\n", "train.stpes: unknown key"),
        ("trian: {}\n", "trian: unknown key"),
        ("train:\n  steps: many\n", "train.steps: expected an integer, got 'many'"),
        ("train:\n  steps: -1\n", "train.steps: must be > 0, got -1"),
        ("train:\n  steps: true\n", "train.steps: expected an integer"),
        ("backbone:\n  level: grey\n", "backbone.level: unknown access level 'grey' .known: black"),
        ("train: 3\n", "train: expected a mapping"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("train: [\n", "is not valid YAML"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as caught:
        load_config(write(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        load_config(None, ["train.steps=abc"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["train.steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["train.steps=11", "output.name=x"])
    save_config(config, tmp_path / "resolved.yaml")
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text())["train"]["steps"] == 11
    assert load_config(tmp_path / "resolved.yaml") == config
