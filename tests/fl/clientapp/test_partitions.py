"""Partition choice per node, and run-config overrides from Flower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedgray.config_schema import ConfigError
from fedgray.fl.clientapp.client import round_seed
from fedgray.fl.common.partitions import load_partition, partition_indices, partition_pool
from fedgray.fl.run_config import resolve_config
from fedgray.resolver import load_config
from tests.helpers import micro_config


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_sites_get_disjoint_deterministic_partitions(tmp_path: Path, partitioner: str) -> None:
    config = micro_config(tmp_path, f"federation.partitioner={partitioner}", "federation.alpha=0.3")
    shares = [partition_indices(config, partition_id=p, num_partitions=3) for p in range(3)]
    held = [set(s.train.tolist()) | set(s.heldout.tolist()) for s in shares]
    assert set().union(*held) == set(range(90)) and sum(map(len, held)) == 90
    for share in shares:
        assert share.group == 0 and 1 <= len(share.heldout) < len(share.train)
        assert not set(share.train.tolist()) & set(share.heldout.tolist())
    again = partition_indices(config, partition_id=1, num_partitions=3)
    assert np.array_equal(again.train, shares[1].train)
    site = load_partition(config, partition_id=1, num_partitions=3)
    assert len(site.train) == len(shares[1].train)
    assert site.heldout.caption_ids.max() < len(site.heldout)


def test_dirichlet_skews_labels(tmp_path: Path) -> None:
    config = micro_config(
        tmp_path, "federation.partitioner=dirichlet", "federation.alpha=0.1", "data.train_size=300"
    )
    counts = [
        np.bincount(
            load_partition(config, partition_id=p, num_partitions=3).train.labels, minlength=40
        )
        for p in range(3)
    ]
    shares = [c / c.sum() for c in counts]
    assert max(np.abs(shares[0] - shares[1]).sum(), np.abs(shares[1] - shares[2]).sum()) > 0.5


def test_by_group_gives_each_site_one_domain(tmp_path: Path) -> None:
    config = micro_config(
        tmp_path,
        "federation.partitioner=by_group",
        "federation.domains=[world/sketch, world/inverted]",
    )
    pool = partition_pool(config)
    assert pool.domains == ("world/sketch", "world/inverted") and pool.block == 45
    for p, domain in enumerate([0, 1, 0, 1]):
        assert partition_indices(config, partition_id=p, num_partitions=4).group == domain
    site = load_partition(config, partition_id=1, num_partitions=4)
    inverted = pool.data(1)
    assert torch.equal(
        site.train.images[0],
        inverted.images[partition_indices(config, partition_id=1, num_partitions=4).train[0]],
    )
    with pytest.raises(ConfigError, match="federation.domains: several domains need"):
        partition_pool(micro_config(tmp_path, "federation.domains=[world/sketch, world/inverted]"))


def test_round_seed_depends_on_seed_round_and_partition() -> None:
    seeds = {round_seed(s, r, p) for s in (0, 1) for r in (1, 2) for p in (0, 1)}
    assert len(seeds) == 8 and round_seed(0, 1, 0) == round_seed(0, 1, 0)


def test_run_config_overrides_the_factory_config() -> None:
    base = load_config(None, ["federation.num_rounds=5"])
    overrides = "federation.num_rounds=3 'federation.personal=[image_out, text_out]' train.lr=0.1"
    config = resolve_config(base, {"overrides": overrides})
    assert config.federation.num_rounds == 3 and config.train.lr == 0.1
    assert config.federation.personal == ["image_out", "text_out"]
    assert resolve_config(base, {}) is base
    with pytest.raises(ConfigError, match="federation.num_rounds: expected an integer"):
        resolve_config(base, {"overrides": "federation.num_rounds=many"})
    with pytest.raises(ConfigError, match="^federation.num-rounds: not a run-config key"):
        resolve_config(base, {"federation.num-rounds": 3})
