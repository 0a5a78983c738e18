"""The Flower app reads the same YAML as ``fedgray run``: pyproject.toml names the file and
carries ``--set``-style overrides, and repeats no default."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedgray.config_schema import ConfigError
from fedgray.fl.common.private import LEDGER
from fedgray.fl.run_config import resolve_config
from fedgray.resolver import load_config
from tests.helpers import micro_config, run_local

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def _app_config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def test_pyproject_names_the_yaml_and_repeats_no_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_config = _app_config()
    assert set(app_config) == {"config", "overrides"}
    monkeypatch.chdir(tmp_path)  # the app's folder, not the working directory, holds the file
    assert resolve_config(None, app_config) == load_config(QUICKSTART)


def test_overrides_are_parsed_as_set_is(tmp_path: Path) -> None:
    run_config = {
        "config": str(QUICKSTART),
        "overrides": "federation.num_rounds=2 train.lr=0.01 "
        "'federation.personal=[image_out, text_out]'",
    }
    expected = load_config(
        QUICKSTART,
        ["federation.num_rounds=2", "train.lr=0.01", "federation.personal=[image_out, text_out]"],
    )
    assert resolve_config(None, run_config) == expected
    base = micro_config(tmp_path)
    assert resolve_config(base, {"config": "", "overrides": "train.lr=0.5"}).train.lr == 0.5
    assert resolve_config(base, {"config": "", "overrides": ""}) is base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("federation.num_rounds=many", "federation.num_rounds: expected an integer"),
        ("method.name=dgaa", "method.name: unknown method 'dgaa' (known: "),
        ("train.lr", "train.lr: an override must look like section.key=value"),
        ("'train.lr=1", "overrides: cannot split"),
    ],
)
def test_bad_overrides_stop_in_one_line(overrides: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, {"config": str(QUICKSTART), "overrides": overrides})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_missing_config_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        resolve_config(None, {"config": "configs/nope.yaml", "overrides": ""})


def test_run_local_sites_see_the_app_overrides(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "privacy.enabled=true", "privacy.noise_multiplier=1.0")
    _, _, grid = run_local(config, run_config={"overrides": "federation.local_steps=1"})
    ledgers = [m.content[LEDGER] for m in grid.received if LEDGER in m.content]
    assert len(ledgers) == 6 and {sum(record["steps"]) for record in ledgers} == {1, 2}
