"""Config loading: defaults, overrides, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedgray.adapters.modules import LgaConfig, LowRankOutputConfig
from fedgray.adapters.white import LastLayersConfig, LoraConfig
from fedgray.config import Config, save_config
from fedgray.config_schema import ConfigError
from fedgray.resolver import load_config
from tests.helpers import MICRO, refused

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


def _run_argv(config: Path, root: Path, *overrides: str) -> list[str]:
    sets = [*MICRO, f"output.root={root}", *overrides]
    return ["run", str(config), *(a for item in sets for a in ("--set", item))]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["output.name=../../escaped"], "output.name: must be one folder name (no '/', not"),
        (["output.name=a/b"], "output.name: must be one folder name"),
        (["output.name=.."], "output.name: must be one folder name"),
        (
            ["privacy.enabled=true", "privacy.target_epsilon=.inf"],
            "privacy.target_epsilon: must be a finite number, got inf",
        ),
        (
            ["privacy.enabled=true", "privacy.noise_multiplier=1", "privacy.max_grad_norm=.inf"],
            "privacy.max_grad_norm: must be a finite number, got inf",
        ),
        (
            ["privacy.enabled=true", "privacy.noise_multiplier=.nan"],
            "privacy.noise_multiplier: must be a finite number, got nan",
        ),
        (["train.lr=.inf"], "train.lr: must be a finite number, got inf"),
        (["train.lr=1e999"], "train.lr: must be a finite number, got inf"),
        ([f"train.lr={'9' * 400}"], "train.lr: must be a finite number, got inf"),
        ([f"train.steps={'9' * 5000}"], "train.steps: cannot read a value (Exceeds the limit"),
        (
            ["federation.strategy_options={bogus: 1}"],
            "federation.strategy_options.bogus: not an option of fedavg (its options: none)",
        ),
        (
            ["federation.strategy=fedprox", "federation.strategy_options={mu: 1}"],
            "federation.strategy_options.mu: not an option of fedprox (its options: proximal_mu)",
        ),
        (
            ["federation.strategy=fedprox", "federation.strategy_options={proximal_mu: lots}"],
            "federation.strategy_options.proximal_mu: expected a number, got 'lots'",
        ),
        (["train.seed=-1"], "train.seed: must be in [0, 2**32), got -1"),
        (["federation.seed=4294967296"], "federation.seed: must be in [0, 2**32)"),
    ],
)
def test_a_bad_value_is_one_line_before_a_run_starts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], overrides: list[str], line: str
) -> None:
    root = tmp_path / "a" / "b" / "runs"
    config = write(tmp_path, "federation:\n  partitioner: iid\n")
    error = refused(_run_argv(config, root, *overrides), capfd)
    assert error.startswith(f"fedgray: error: {line}")
    assert sorted(tmp_path.rglob("*")) == [config]  # no run folder, inside its root or not


def test_strategy_options_a_strategy_takes_are_accepted_as_its_types() -> None:
    config = load_config(
        None, ["federation.strategy=krum", "federation.strategy_options={num_malicious_nodes: 1}"]
    )
    assert config.federation.strategy_options == {"num_malicious_nodes": 1}
    config = load_config(
        None, ["federation.strategy=fedprox", "federation.strategy_options={proximal_mu: 1}"]
    )
    assert config.federation.strategy_options == {"proximal_mu": 1.0}


def _alias_bomb(levels: int) -> str:
    """``levels`` anchors, each a list of nine aliases of the one before: 9**levels values."""
    lines = ["federation:", "  strategy_options:", "    a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, _alias_bomb(9))  # 9**9: 387 million values once expanded
    error = refused(_run_argv(config, tmp_path / "runs"), capfd)
    assert error == (
        f"fedgray: error: {config}: expands to more than 100,000 values (through its aliases); "
        "a config is far smaller"
    )
    aliases = ", ".join(["*a"] * 10)
    flow = (
        "{a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "
        + ", ".join(
            f"{name}: &{name} [{aliases.replace('a', prev)}]"
            for prev, name in zip("abcde", "bcdef", strict=True)
        )
        + "}"
    )  # 10**6 values
    error = refused(_run_argv(write(tmp_path, "{}\n"), tmp_path / "runs", f"train.x={flow}"), capfd)
    assert error.startswith("fedgray: error: train.x: expands to more than 100,000 values")
    assert not (tmp_path / "runs").exists()
    legal = write(tmp_path, "data:\n  dataset: &d world/sketch\nmethod:\n  whiten: *d\n")
    assert load_config(legal).method.whiten == "world/sketch"  # aliases within bounds still load


def test_a_huge_config_or_value_is_refused_in_a_short_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, f"output:\n  name: {'x' * 10_000_000}\n")
    error = refused(_run_argv(config, tmp_path / "runs"), capfd)
    assert error == (
        f"fedgray: error: {config}: 10,000,017 bytes, more than the 1,048,576 a config may hold"
    )
    value = "y" * 500_000
    argv = _run_argv(write(tmp_path, "{}\n"), tmp_path / "runs", f"train.steps={value}")
    error = refused(argv, capfd)
    cut = f"'{'y' * 39}...(500,002 characters)"  # the repr's first 40 characters
    assert error == f"fedgray: error: train.steps: expected an integer, got {cut}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("{}\n", ["method.lora_rank=2"], "method.lora_rank: moved to method.lora.rank"),
        (
            "method:\n  prompt_tokens: 4\n",
            [],
            "method.prompt_tokens: moved to method.lga.prompt_tokens",
        ),
        (
            "method:\n  last_layers: 2\n",
            [],
            "method.last_layers: moved to method.last_layers.blocks",
        ),
        (
            "{}\n",
            ["method.output_rank=4"],
            "method.output_rank: moved to method.output_lowrank.rank",
        ),
    ],
)
def test_a_method_option_given_the_old_way_names_its_new_key(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml_text), overrides)
    assert str(caught.value) == message


def test_each_method_reads_its_own_section(tmp_path: Path) -> None:
    text = (
        "method:\n  name: lora\n  lora:\n    rank: 2\n    train_a: true\n"
        "  last_layers:\n    blocks: 3\n"
    )
    config = load_config(write(tmp_path, text), ["method.lga.prompt_tokens=5"])
    lora = config.method.section(LoraConfig)
    assert (lora.rank, lora.alpha, lora.train_a) == (2, 8.0, True)
    assert config.method.section(LastLayersConfig).blocks == 3
    assert config.method.section(LgaConfig).prompt_tokens == 5
    assert config.method.section(LowRankOutputConfig).rank == 8
