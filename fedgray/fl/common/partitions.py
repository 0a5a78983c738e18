"""Each site's private data: a deterministic partition of the train split, minus a held-out part.

The pool is the configured train split (``data.dataset``), or, with ``federation.domains``,
one block of ``data.train_size / len(domains)`` samples per domain. Partitioners come from
:data:`fedgray.data.partitioners.PARTITIONERS`: ``iid``, ``dirichlet`` (over class labels) and
``by_group`` (one domain per site). A fraction ``federation.holdout`` of each site's samples
is held out for federated evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedgray.config import Config, FederationConfig
from fedgray.config_schema import ConfigError
from fedgray.data.partitioners import PARTITIONERS
from fedgray.fl.common.cache import shared_data
from fedgray.tasks import TaskData


@dataclass(frozen=True)
class Partition:
    """One site's training samples and its held-out evaluation samples."""

    train: TaskData
    heldout: TaskData


@dataclass(frozen=True)
class Pool:
    """The samples all sites' partitions are cut from: consecutive blocks, one per domain."""

    config: Config
    domains: tuple[str, ...]
    block: int

    def labels(self) -> np.ndarray:
        """Class labels of the pool (loads the data; single-domain pools only)."""
        return self.data(0).labels.cpu().numpy()

    def groups(self) -> np.ndarray:
        """Domain number of every sample."""
        return np.repeat(np.arange(len(self.domains)), self.block)

    def data(self, group: int) -> TaskData:
        """The samples of domain block ``group``."""
        return shared_data(self.config, dataset=self.domains[group], split="train", size=self.block)


Cut = Callable[[FederationConfig, Pool, int], list[np.ndarray]]

_CUTS: dict[str, Cut] = {
    "iid": lambda fed, pool, n: PARTITIONERS["iid"](pool.block, num_partitions=n, seed=fed.seed),
    "dirichlet": lambda fed, pool, n: PARTITIONERS["dirichlet"](
        pool.labels(), num_partitions=n, alpha=fed.alpha, seed=fed.seed
    ),
    "by_group": lambda fed, pool, n: PARTITIONERS["by_group"](pool.groups(), num_partitions=n),
}


def partition_pool(config: Config) -> Pool:
    """The pool a federation's sites share out."""
    fed = config.federation
    domains = tuple(fed.domains) or (config.data.dataset,)
    if len(domains) > 1 and fed.partitioner != "by_group":
        raise ConfigError("federation.domains: several domains need partitioner by_group")
    return Pool(config, domains, config.data.train_size // len(domains))


@dataclass(frozen=True)
class PartitionIndices:
    """Which pool samples a site holds: its domain block and indices inside that block."""

    group: int
    train: np.ndarray
    heldout: np.ndarray


def partitions(config: Config, num_partitions: int) -> list[np.ndarray]:
    """Every site's pool indices (deterministic from seeds); raises ValueError when the pool
    cannot be cut into ``num_partitions`` non-empty shares."""
    return _CUTS[config.federation.partitioner](
        config.federation, partition_pool(config), num_partitions
    )


def partition_indices(
    config: Config, *, partition_id: int, num_partitions: int
) -> PartitionIndices:
    """Site ``partition_id``'s share among ``num_partitions`` (deterministic from seeds)."""
    fed = config.federation
    pool = partition_pool(config)
    indices = partitions(config, num_partitions)[partition_id]
    group = int(indices[0]) // pool.block
    order = np.random.default_rng([fed.seed, partition_id]).permutation(
        indices - group * pool.block
    )
    cut = heldout_count(len(order), fed.holdout)
    return PartitionIndices(group, np.sort(order[cut:]), np.sort(order[:cut]))


def heldout_count(size: int, holdout: float) -> int:
    """How many of a site's ``size`` samples it holds out: the share ``holdout``, rounded, at
    least one (federated evaluation scores something) and never all (one is trained on)."""
    return min(size - 1, max(1, round(size * holdout)))


def train_counts(config: Config) -> list[int]:
    """Every site's number of training samples: its share minus its held-out part (what
    its DP-SGD sample rate divides by)."""
    fed = config.federation
    shares = partitions(config, fed.num_sites)
    return [len(share) - heldout_count(len(share), fed.holdout) for share in shares]


def load_partition(config: Config, *, partition_id: int, num_partitions: int) -> Partition:
    """Site ``partition_id``'s training and held-out samples."""
    share = partition_indices(config, partition_id=partition_id, num_partitions=num_partitions)
    data = partition_pool(config).data(share.group)
    return Partition(train=data.subset(share.train), heldout=data.subset(share.heldout))
