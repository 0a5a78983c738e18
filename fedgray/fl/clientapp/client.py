"""What a site does with the global arrays: train them locally, or evaluate them.

Only adapter tensors come in and go out; the backbone and the data stay in this process.
This module only turns Flower records into a call of the method's trainer kind
(:mod:`fedgray.train.kinds`) and back. Adapters named by ``federation.personal`` prefixes
never leave the site: they live in the node's ``context.state`` between rounds and in the
site's own state folder (:mod:`fedgray.fl.clientapp.state`), which a resumed run reads. Local
randomness (initialisation of personal adapters, batch order) is seeded from (federation
seed, round, partition).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedgray.config import Config
from fedgray.fl.clientapp.floor import Floor
from fedgray.fl.clientapp.state import load_personal, save_personal, simulated_site_folder
from fedgray.fl.common.cache import shared_backbone
from fedgray.fl.common.central import aggregation_weight
from fedgray.fl.common.compression import decode_down, encode_up
from fedgray.fl.common.partitions import Partition, load_partition
from fedgray.fl.common.private import LEDGER, ledger_reply, ledger_to_record, site_ledger
from fedgray.fl.common.records import from_record, to_record
from fedgray.privacy import Ledger
from fedgray.privacy.ledger import Entry
from fedgray.train.kinds import SiteRound, SiteUpdate, State, kind_of
from strategies import ORDER_KEY, split_personal

PERSONAL_STATE = "personal-adapters"
DRAWN_STATE = "audit-batch-sizes"  # under privacy.audit: the audited site's batch sizes so far
RESIDUAL = "compression-residual/"  # kept-state prefix of the int8 codec's error feedback


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A 32-bit seed that depends on (seed, round, partition) only."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


@dataclass
class Client:
    """One site: its partition number, data and the shared backbone's config; a deployed
    site also its own privacy floor (:mod:`fedgray.fl.clientapp.floor`)."""

    config: Config
    partition_id: int
    data: Partition
    state_dir: Path | None = None
    floor: Floor | None = None

    @classmethod
    def open(cls, config: Config, *, partition_id: int, num_partitions: int) -> Client:
        """The site of ``partition_id`` (backbone and data come from per-process caches)."""
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        data = load_partition(config, partition_id=partition_id, num_partitions=num_partitions)
        return cls(config, partition_id, data, simulated_site_folder(config.output, partition_id))

    def kept(self, state: RecordDict, *, upto: int | None) -> tuple[State, State]:
        """What this site keeps to itself as of round ``upto``: its personal adapters and
        the int8 codec's residual. From its state folder when it has one (it survives the
        process), else from ``context.state``."""
        if self.state_dir is not None:
            kept = load_personal(self.state_dir, upto=upto)
        elif PERSONAL_STATE in state:
            kept = from_record(state.array_records[PERSONAL_STATE])
        else:
            kept = {}
        residual = {k[len(RESIDUAL) :]: v for k, v in kept.items() if k.startswith(RESIDUAL)}
        return {k: v for k, v in kept.items() if not k.startswith(RESIDUAL)}, residual

    def _keep(self, state: RecordDict, server_round: int, kept: State) -> None:
        if kept:
            state[PERSONAL_STATE] = to_record(kept)
            if self.state_dir is not None:
                save_personal(self.state_dir, server_round, kept)

    def train(
        self,
        arrays: ArrayRecord,
        state: RecordDict,
        *,
        server_round: int,
        proximal_mu: float,
        settings: ConfigRecord | None = None,
        run_id: int = 0,
    ) -> tuple[ArrayRecord, dict[str, float], RecordDict]:
        """One round of the method's trainer kind from the global ``arrays``: the shared
        arrays, metrics and other records (the DP ledger). Under DP a site whose budget
        would be exceeded raises :class:`~fedgray.privacy.budget.BudgetExhausted`; a site
        whose floor refuses the round (before training, or before its update leaves: run
        ``run_id``'s spend is then recorded in its ledger) raises
        :class:`~fedgray.fl.common.private.SiteRefusal`."""
        config, privacy = self.config, self.config.privacy
        if self.floor is not None:
            self.floor.admit(config, server_round=server_round)
        compressed = config.federation.compression != "none"
        received = decode_down(arrays) if compressed else from_record(arrays)
        personal, residual = self.kept(state, upto=server_round - 1)
        seed = round_seed(config.federation.seed, server_round, self.partition_id)
        torch.manual_seed(seed)
        ledger = None
        if privacy.enabled:
            ledger = site_ledger(
                state, settings or ConfigRecord(), privacy, partition_id=self.partition_id
            )
        update = kind_of(config.method).train_round(
            SiteRound(
                config,
                shared_backbone(config),
                self.data.train,
                shared=received,
                personal=personal,
                server_round=server_round,
                partition_id=self.partition_id,
                seed=seed,
                proximal_mu=proximal_mu,
                ledger=ledger,
                drawn=_drawn(state),
            )
        )
        if update.drawn:
            state[DRAWN_STATE] = ConfigRecord({"sizes": list(update.drawn)})
        if self.floor is not None:
            self.floor.release(self.state_dir, run_id, _spent(ledger, update))
        on_cpu = {k: v.detach().cpu() for k, v in update.state.items()}  # from train.device
        shared, personal = split_personal(on_cpu, config.federation.personal)
        reply = to_record(shared)
        if compressed:
            reply, residual = encode_up(shared, received, residual)
        self._keep(state, server_round, {**personal, **_prefixed(residual)})
        metrics = {
            "num-examples": aggregation_weight(privacy.central, len(self.data.train)),
            **update.metrics,
            ORDER_KEY: self.partition_id,
        }
        records = RecordDict()
        if update.ledger is not None:
            state[LEDGER] = ledger_to_record(update.ledger)
            records[LEDGER] = ledger_reply(
                update.ledger,
                partition_id=self.partition_id,
                epsilon=metrics["epsilon"],
                audit=update.audit,
            )
        return reply, metrics, records

    def evaluate(
        self, arrays: ArrayRecord, state: RecordDict, *, server_round: int | None = None
    ) -> dict[str, float]:
        """Metrics of the global (plus this site's personal) arrays on its held-out samples."""
        weights = {**from_record(arrays), **self.kept(state, upto=server_round)[0]}
        scored = kind_of(self.config.method).score(
            self.config, shared_backbone(self.config), weights, self.data.heldout
        )
        return {"num-examples": len(self.data.heldout), **scored}


def _drawn(state: RecordDict) -> tuple[int, ...]:
    """The batch sizes the audited site drew in its earlier rounds of this run, as kept in
    ``context.state`` (none where that state was lost: the check then covers fewer batches,
    and says how many)."""
    if DRAWN_STATE not in state:
        return ()
    sizes = cast(list[int], state.config_records[DRAWN_STATE]["sizes"])  # as train keeps them
    return tuple(int(size) for size in sizes)


def _spent(before: Ledger | None, update: SiteUpdate) -> Entry | None:
    """What a round's DP-SGD spent, ``(noise, sample rate, steps)``; None without DP."""
    if update.ledger is None or "noise-multiplier" not in update.metrics:
        return None
    steps = update.ledger.steps - (before.steps if before is not None else 0)
    return (update.metrics["noise-multiplier"], update.metrics["sample-rate"], steps)


def _prefixed(residual: State) -> State:
    return {RESIDUAL + k: v for k, v in residual.items()}
