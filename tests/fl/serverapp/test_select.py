"""``federation.select: best``: the run ends with the adapters of the round that scored best
on the sites' held-out data or the server's validation split (round 0 included, ties to the
earlier round), also after a resume; it is refused where no site evaluates, and on test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord

from fedgray.config_schema import ConfigError
from fedgray.fl.common.records import from_record, to_record
from fedgray.fl.serverapp.checkpoint import load_checkpoint
from fedgray.fl.serverapp.selection import Selection
from fedgray.fl.serverapp.server import FederationResult, central_evaluator, initial_adapters
from fedgray.fl.simulation.engine import open_run
from fedgray.resolver import load_config
from fedgray.runs import load_adapters
from tests.helpers import micro_config, run_local

BEST = ["federation.select=best", "federation.num_rounds=4"]
VALIDATION = ["federation.num_rounds=5", "data.validation_size=40"]  # a case found by seeds


def _equal(a: ArrayRecord, b: ArrayRecord) -> bool:
    x, y = from_record(a), from_record(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _federated(run_dir: Path) -> list[float]:
    """Round by round, the sites' held-out R@1 mean as ``metrics.jsonl`` has it."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["federated"]["r1_mean"] for line in lines]


@pytest.fixture(scope="module")
def best_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FederationResult, dict, Path]:
    """4 rounds of the micro federation whose held-out R@1 goes 14.4, 20.0, 14.4, 20.0, 17.2
    (ties and a last round below the best: fixed seeds make this exact)."""
    root = tmp_path_factory.mktemp("select")
    result, summary, _ = run_local(micro_config(root, *BEST, name="best"))
    return result, summary, root


def test_best_run_ends_with_the_first_best_rounds_adapters(
    best_run: tuple[FederationResult, dict, Path],
) -> None:
    result, summary, root = best_run
    values = _federated(root / "best")
    best = values.index(max(values))  # the first of tied rounds
    assert best not in (0, 4) and max(values) > values[-1]  # neither the start nor the end
    assert values.count(max(values)) > 1  # a later round ties it and is not chosen
    assert result.selected == summary["selected_round"] == best and summary["select"] == "best"
    # The same seeds stopped after round ``best`` end with that round's global adapters.
    replay, replay_summary, _ = run_local(
        micro_config(root, f"federation.num_rounds={best}", name="replay")
    )
    assert replay_summary["selected_round"] == best  # select: last takes the last round
    assert _equal(result.arrays, replay.arrays)
    assert not _equal(result.arrays, load_checkpoint(root / "best").arrays)  # round 4's
    saved, meta = load_adapters(root / "best" / "adapters.pt", backbone="fedgray-micro")
    assert _equal(result.arrays, to_record(saved)) and meta["round"] == best
    # ``final`` reports the chosen round's adapters on the server's test split.
    test = central_evaluator(micro_config(root, *BEST, name="best"), "test")
    assert summary["final"]["r1_mean"] == test(result.arrays)["r1_mean"]


def test_a_tie_with_round_0_keeps_the_initial_adapters(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "federation.select=best", "train.lr=1e-5")
    result, summary, _ = run_local(config)
    values = _federated(tmp_path / "run")
    assert values == [values[0]] * 3  # steps too small to move the held-out R@1
    assert result.selected == 0 and summary["final"] == summary["zero_shot"]
    assert _equal(result.arrays, initial_adapters(config))
    assert not _equal(result.arrays, load_checkpoint(tmp_path / "run").arrays)  # it trained


def test_resumed_best_run_ends_as_the_uninterrupted_one(
    best_run: tuple[FederationResult, dict, Path],
) -> None:
    full, full_summary, root = best_run
    run_local(micro_config(root, *BEST, "federation.num_rounds=2", name="cut"))
    saved = load_checkpoint(root / "cut").selection
    assert saved["round"] == full.selected == 1  # the best round is not the checkpoint's
    with pytest.raises(ConfigError, match=r"^federation\.select: cannot change on resume"):
        open_run(None, ["federation.select=last"], resume=root / "cut")
    config, _ = open_run(None, ["federation.num_rounds=4"], resume=root / "cut")
    resumed, summary, _ = run_local(config)
    assert resumed.selected == full.selected and _equal(resumed.arrays, full.arrays)
    assert summary["final"] == full_summary["final"]
    assert _federated(root / "cut") == _federated(root / "best")


def test_best_needs_sites_that_evaluate() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["federation.select=best", "federation.fraction_evaluate=0"])
    message = str(caught.value)
    assert message.startswith("federation.select: ") and "fraction_evaluate" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"^federation\.select: unknown selection 'top'"):
        load_config(None, ["federation.select=top"])
    assert load_config(None, ["federation.fraction_evaluate=0"]).federation.select == "last"


def test_selecting_on_test_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["federation.select=best", "federation.select_on=test"])
    message = str(caught.value)
    assert message.startswith("federation.select_on: 'test' would choose") and "\n" not in message
    with pytest.raises(ConfigError, match=r"^federation\.select_on: unknown selection split"):
        load_config(None, ["federation.select_on=train"])
    # the server's validation split needs no site to evaluate
    on_validation = ["federation.select=best", "federation.select_on=validation"]
    config = load_config(None, [*on_validation, "federation.fraction_evaluate=0"])
    assert config.federation.select_on == "validation"


@pytest.mark.slow
def test_best_on_validation_ignores_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chosen on the server's validation split, a round that scores best on test is not
    kept when validation prefers another one, and the reported figure is the chosen
    round's test score, not the best test score. The run never scores a round on test:
    the test reads a spy's copy of every round's adapters and scores them itself."""
    offered: dict[int, ArrayRecord] = {}
    offer = Selection.offer

    def spy(self: Selection, server_round: int, arrays: ArrayRecord, scores: dict) -> None:
        offered[server_round] = arrays
        offer(self, server_round, arrays, scores)

    monkeypatch.setattr(Selection, "offer", spy)
    config = micro_config(
        tmp_path,
        *VALIDATION,
        "federation.select=best",
        "federation.select_on=validation",
        "federation.fraction_evaluate=0",
    )
    result, summary, _ = run_local(config)
    validation = [r["validation"]["r1_mean"] for r in result.records]
    score = central_evaluator(config, "test")
    test = [score(offered[r["round"]])["r1_mean"] for r in result.records]
    chosen = validation.index(max(validation))
    assert result.selected == summary["selected_round"] == chosen
    assert test.index(max(test)) != chosen  # the two splits disagree on the best round
    assert summary["final"]["r1_mean"] == test[chosen] < max(test)
    assert summary["selected_on"] == "the server's validation split"
