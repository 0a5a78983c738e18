"""The Flower app reads the same YAML as ``fedgray run``: pyproject.toml names the file and
carries ``--set``-style overrides, and repeats no default; an app that ``fedgray run`` or a
deployment writes carries the resolved config whole, as one typed document parsed once per
process."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedgray import resolver
from fedgray.config import parse_document, to_document
from fedgray.config_schema import ConfigError
from fedgray.fl.common.private import LEDGER
from fedgray.fl.run_config import resolve_config
from fedgray.resolver import load_config
from tests.helpers import micro_config, run_local

ROOT = Path(__file__).resolve().parents[2]
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


DOCUMENTED = [
    "federation.domains=[world/sketch, world/noisy]",
    "federation.partitioner=by_group",
    "federation.strategy=fedprox",
    "federation.strategy_options={proximal_mu: 0.5}",
    "federation.personal=[image_out]",
    "privacy.enabled=true",
    "privacy.target_epsilon=8",
    "train.lr=0.00123456789",
]


def test_a_document_carries_the_config_whole_and_typed(tmp_path: Path) -> None:
    config = micro_config(tmp_path, *DOCUMENTED)
    document = to_document(config)
    assert resolver.resolve_document(document) == config
    assert resolve_config(None, {"document": document, "overrides": ""}) == config
    read = resolve_config(None, {"document": document})
    assert read.federation.domains == ["world/sketch", "world/noisy"]
    assert read.federation.strategy_options == {"proximal_mu": 0.5}
    assert read.privacy.noise_multiplier is None and read.train.lr == config.train.lr
    overridden = resolve_config(None, {"document": document, "overrides": "train.lr=0.5"})
    assert overridden.train.lr == 0.5 and overridden.federation.domains == read.federation.domains


def test_a_document_is_parsed_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = to_document(micro_config(tmp_path, "federation.seed=4242"))
    parsed: list[str] = []

    def counting(text: str) -> object:
        parsed.append(text)
        return parse_document(text)

    monkeypatch.setattr(resolver, "parse_document", counting)
    configs = [resolve_config(None, {"document": document}) for _ in range(3)]
    assert parsed == [document]
    assert configs[0] == configs[2] and configs[0] is not configs[2]  # each its own copy


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        (
            {"federation.num-rounds": 2},
            "federation.num-rounds: not a run-config key of fedgray (known: document, config, "
            "overrides)",
        ),
        ({"document": "{not json"}, "document: not a config document"),
        ({"document": "[1, 2]"}, "document: expected a mapping of sections"),
        ({"document": '{"method": {"name": "dgaa"}}'}, "method.name: unknown method 'dgaa'"),
        ({"document": '{"train": {"steps": "many"}}'}, "train.steps: expected an integer"),
        ({"document": "{}", "config": "configs/quickstart.yaml"}, "config: the run config holds"),
    ],
)
def test_a_bad_run_config_stops_in_one_line(run_config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, run_config)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
