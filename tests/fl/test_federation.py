"""A 3-site, 2-round federation end to end on a LocalGrid: run folder, traffic, round 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedgray.adapters import build_model
from fedgray.config import DEFAULT_GRADIENT_BUDGET, DEFAULT_SAMPLE_BUDGET
from fedgray.fl.clientapp.client import PERSONAL_STATE
from fedgray.fl.common.cache import shared_backbone, shared_data
from fedgray.fl.common.records import from_record
from fedgray.fl.common.site_names import SITE_RECORD
from fedgray.fl.serverapp.failures import FederationError
from fedgray.runs import load_adapters
from fedgray.tasks import evaluate
from tests.helpers import micro_config, run_local


def test_three_sites_two_rounds_write_a_run_folder(tmp_path: Path) -> None:
    config = micro_config(tmp_path)
    result, summary, grid = run_local(config)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "adapters.pt", "curve.png", "summary.json"} <= {
        p.name for p in run.iterdir()
    }
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert [r["sites_trained"] for r in records] == [0, 3, 3]
    for record in records[1:]:
        assert record["train_loss"] > 0
        assert set(record["federated"]) >= {"i2t_r1", "t2i_r1", "r1_mean", "accuracy"}
        assert set(record["validation"]) >= {"r1_mean", "accuracy"}
    state, meta = load_adapters(run / "adapters.pt", backbone="fedgray-micro")
    model = build_model(shared_backbone(config), "dga")
    model.load_state_dict(state)
    assert meta["method"] == "dga"
    assert summary["final"]["r1_mean"] == result.test["final"]["r1_mean"]
    assert (summary["select"], summary["selected_on"]) == ("last", None)  # nothing chosen
    assert summary["bytes_per_site_per_round"] < 0.01 * summary["backbone_bytes"]
    assert not any(PERSONAL_STATE in c.state for c in grid.contexts.values())
    # What the sites spent of their backbone budgets is reported: calls, and (within the
    # default budget) samples and input gradients: each DGA step sends a batch of images
    # and one of captions, both needing input gradients.
    assert records[1]["queries"] > 0
    assert summary["queries"] == sum(r.get("queries", 0) for r in records)
    assert config.backbone.sample_budget == DEFAULT_SAMPLE_BUDGET
    assert config.backbone.gradient_budget == DEFAULT_GRADIENT_BUDGET
    fed = config.federation
    per_round = fed.num_sites * fed.local_steps * 2 * config.train.batch_size
    assert [r.get("samples") for r in records] == [None, per_round, per_round]
    assert [r.get("gradients") for r in records] == [None, per_round, per_round]
    assert summary["samples"] == summary["gradients"] == fed.num_rounds * per_round


def test_only_adapter_tensors_travel(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "federation.num_rounds=1")
    _, _, grid = run_local(config)
    adapter_keys = set(build_model(shared_backbone(config), "dga").state_dict())
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(trains) == 3
    for message in grid.sent + grid.received:
        assert set(message.content) <= {"arrays", "config", "metrics", SITE_RECORD}
        for record in message.content.array_records.values():
            assert set(record) == adapter_keys
    replies = [m for m in grid.received if m.content.array_records]
    assert {int(m.content["metrics"]["num-examples"]) for m in replies} <= set(range(20, 30))
    assert all("train-loss" in m.content["metrics"] for m in replies)
    sent = sum(t.numel() for t in from_record(trains[0].content["arrays"]).values())
    assert sent < 0.005 * shared_backbone(config).interface.parameter_count


def test_round_zero_is_exactly_zero_shot(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "federation.num_rounds=1")
    result, summary, _ = run_local(config)
    model = build_model(shared_backbone(config), "zero-shot")
    splits = {
        split: shared_data(config, dataset=config.data.dataset, split=split, size=size)
        for split, size in (("validation", config.data.validation_size), ("test", 40))
    }
    torch.manual_seed(0)
    assert result.records[0]["validation"] == evaluate(model, splits["validation"])
    zero_shot = evaluate(model, splits["test"])
    assert result.test["zero_shot"] == zero_shot
    assert summary["zero_shot"]["r1_mean"] == zero_shot["r1_mean"]


def test_personal_adapters_stay_on_their_site(tmp_path: Path) -> None:
    config = micro_config(tmp_path, "federation.personal=[image_out, text_out]")
    result, _, grid = run_local(config)
    assert not any(k.startswith(("image_out", "text_out")) for k in result.arrays)
    for message in grid.sent + grid.received:
        for record in message.content.array_records.values():
            assert not any(k.startswith(("image_out", "text_out")) for k in record)
    personal = [from_record(c.state[PERSONAL_STATE]) for c in grid.contexts.values()]
    assert set(personal[0]) == {
        "image_out.weight",
        "image_out.bias",
        "text_out.weight",
        "text_out.bias",
    }
    assert not torch.equal(personal[0]["image_out.weight"], personal[1]["image_out.weight"])


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("fedprox", "{proximal_mu: 0.5}"),
        ("fedmedian", "{}"),
        ("fedavgm", "{server_momentum: 0.5}"),
        ("fedadam", "{eta: 0.01}"),
        ("fedyogi", "{eta: 0.01}"),
    ],
)
def test_other_strategies_run(tmp_path: Path, strategy: str, options: str) -> None:
    config = micro_config(
        tmp_path,
        "federation.central_eval=false",
        f"federation.strategy={strategy}",
        f"federation.strategy_options={options}",
    )
    result, summary, _ = run_local(config)
    assert [r["sites_trained"] for r in result.records] == [0, 3, 3] and not result.rejections
    assert summary["evaluated_on"] == "the sites' held-out data"
    final = from_record(result.arrays)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in final.values())


def test_each_simulated_site_spends_a_gradient_budget_of_its_own(tmp_path: Path) -> None:
    """Three sites on one in-process backbone each take their own budget's input gradients,
    as deployed sites with backbones of their own do, and none takes more."""
    need = 2 * 2 * 2 * 8  # rounds x local steps x (images, captions) x batch: one site's run
    result, summary, _ = run_local(micro_config(tmp_path, f"backbone.gradient_budget={need}"))
    assert [r["sites_trained"] for r in result.records] == [0, 3, 3]
    assert summary["gradients"] == 3 * need  # three budgets' worth: each site spent its own
    short = micro_config(tmp_path, f"backbone.gradient_budget={need - 1}", name="short")
    with pytest.raises(
        FederationError, match=f"round 2: no site could train; .*budget of {need - 1} "
    ):
        run_local(short)  # each site asks its 64th input gradient in round 2, of its own 63
