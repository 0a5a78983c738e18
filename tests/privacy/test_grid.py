"""Choosing a private recipe from a fixed grid: each trial at a share of the budget that
the accountant composes within the target, the winner chosen on the validation split, the
grid's whole cost in the selection ledger."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from fedgray.cli import main
from fedgray.config import Config
from fedgray.fl.common.records import to_record
from fedgray.fl.serverapp import server
from fedgray.privacy import Ledger
from fedgray.privacy.grid import TOLERANCE, selection_cost, trial_epsilon, trial_ledger
from fedgray.resolver import load_config
from fedgray.runs import load_adapters
from fedgray.tasks import TaskData
from tests.helpers import MICRO

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


def test_trials_share_the_target_as_composed_by_the_accountant() -> None:
    small, large = {0: (1.0, 10), 1: (0.5, 10)}, {0: (1.0, 40), 1: (0.5, 40)}
    trials = [small, large, {0: (1.0, 10)}]  # site 1 trains in two of the three trials
    for target in (8.0, 1.0):
        epsilon = trial_epsilon(target, 1e-5, trials, accountant="rdp")
        costs = [
            trial_ledger(epsilon, 1e-5, trials, site=s, accountant="rdp").epsilon(1e-5)
            for s in (0, 1)
        ]
        assert max(costs) <= target  # the site in every trial binds
        assert costs[0] > costs[1]
        assert epsilon > target / len(trials)  # more than basic composition's share
        # and the largest such epsilon, within the bisection's tolerance
        above = trial_ledger(epsilon * (1 + 2 * TOLERANCE), 1e-5, trials, site=0, accountant="rdp")
        assert above.epsilon(1e-5) > target
    assert trial_epsilon(3.0, 1e-5, [small], accountant="rdp") == 3.0  # one trial: all of it
    with pytest.raises(ValueError, match="at least one trial"):
        trial_epsilon(1.0, 1e-5, [], accountant="rdp")


def test_selection_cost_charges_each_site_every_trial_it_trained_in() -> None:
    trial = Ledger("rdp", ((1.1, 0.05, 40),))
    cost = selection_cost([{0: trial, 1: trial}, {0: trial}], delta=1e-5)
    both = Ledger("rdp", ((1.1, 0.05, 80),)).epsilon(1e-5)  # one accountant, all 80 steps
    assert cost[0] == pytest.approx(both, rel=1e-9) and cost[0] > 1.2 * trial.epsilon(1e-5)
    assert cost[1] == trial.epsilon(1e-5)  # site 1 trained in one trial only
    with pytest.raises(ValueError, match="different accountants"):
        selection_cost([{0: trial}, {0: Ledger("prv", trial.history)}], delta=1e-5)


def count_split_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times the server loads each of its splits from now on."""
    reads: Counter[str] = Counter()
    load = server._split_data

    def counted(config: Config, split: str) -> TaskData:
        reads[split] += 1
        return load(config, split)

    monkeypatch.setattr(server, "_split_data", counted)
    return reads


@pytest.mark.slow
def test_grid_sweep_chooses_on_validation_and_its_cost_is_in_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_split_reads(monkeypatch)
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--rounds", "1", "--quiet"]
    args += ["--epsilons", "2", "--seeds", "1", "--grid", "train.lr=0.0001,0.01"]
    settings = [*MICRO, "data.validation_size=40"]
    assert main([*args, *(f"--set={o}" for o in settings)]) == 0
    assert reads["test"] == 1  # two trials trained and scored on validation, one test read
    (folder,) = tmp_path.glob("sweep-*")
    with (folder / "sweep.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    ledger = json.loads((folder / "eps2-seed0" / "selection.json").read_text())
    trials = ledger["trials"]
    assert [t["recipe"] for t in trials] == [["train.lr=0.0001"], ["train.lr=0.01"]]
    share = ledger["trial_epsilon"]  # more than basic composition's epsilon / 2
    assert 1.0 < share < 2.0 and ledger["trial_delta"] == 1e-5
    for trial in trials:  # each trial within its share, its validation score recorded
        assert 0 < trial["achieved_max_epsilon"] <= share
        records = (folder / "eps2-seed0" / trial["run"] / "metrics.jsonl").read_text()
        last = json.loads(records.splitlines()[-1])
        assert trial["validation_r1_mean"] == last["validation"]["r1_mean"]
    scores = [t["validation_r1_mean"] for t in trials]
    assert ledger["chosen"] == scores.index(max(scores))
    # the choice is paid for: every site is charged both trials, above any one trial alone
    spent = ledger["selection_epsilon"]
    assert max(t["achieved_max_epsilon"] for t in trials) < spent <= 2.0
    assert spent == max(ledger["selection_epsilon_per_site"].values())
    assert float(row["selection_epsilon"]) == spent and row["trials"] == "2"
    assert float(row["target_epsilon"]) == 2.0
    assert row["recipe"] == " ".join(trials[ledger["chosen"]]["recipe"])
    # Only the winner has a test figure: its saved adapters', scored as anyone would.
    winner = ledger["chosen"]
    assert [i for i, t in enumerate(trials) if "test_r1_mean" in t] == [winner]
    runs = [folder / "eps2-seed0" / trial["run"] for trial in trials]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    on_test = "the server's test split, read once after the last round"
    assert [s["evaluated_on"] == on_test for s in summaries] == [i == winner for i in range(2)]
    assert all((run / "adapters.pt").is_file() for run in runs)  # every trial's adapters kept
    config = load_config(runs[winner] / "config.yaml")
    state, _ = load_adapters(runs[winner] / "adapters.pt", backbone=config.backbone.name)
    figure = server.central_evaluator(config, "test")(to_record(state))["r1_mean"]
    assert trials[winner]["test_r1_mean"] == summaries[winner]["final"]["r1_mean"] == figure
    assert float(row["r1_mean"]) == pytest.approx(figure)  # the CSV's text of the same float
    assert float(row["zero_shot_r1_mean"]) == pytest.approx(
        summaries[winner]["zero_shot"]["r1_mean"]
    )


def test_a_bad_grid_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", str(QUICKSTART), "--output", str(tmp_path), "--epsilons", "2"]
    with pytest.raises(SystemExit):
        main([*args, "--grid", "train.lr"])
    assert "--grid: expected KEY=V1,V2" in capsys.readouterr().err
    assert main([*args, "--grid", "train.stpes=1,2"]) != 0
    assert "train.stpes: unknown key" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
