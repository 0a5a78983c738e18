"""Method options reach federated runs: the model sites and server build is the configured one."""

from __future__ import annotations

from pathlib import Path

import torch

from fedgray.config import to_document
from fedgray.fl.common.private import LEDGER
from fedgray.fl.common.records import from_record
from tests.helpers import micro_config, run_local

LORA = ["backbone.level=white", "method.name=lora", "federation.num_rounds=1"]


def _factors(arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in arrays.items() if k.endswith((".down", ".up"))}


def test_a_federation_sends_and_trains_the_configured_lora_rank(tmp_path: Path) -> None:
    config = micro_config(tmp_path, *LORA, "method.lora.rank=2", "method.lora.alpha=4")
    result, _, grid = run_local(config)
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    sent = _factors(from_record(trains[0].content["arrays"]))
    assert sent, "no LoRA factors were sent"
    # FFA-LoRA: A is frozen at the same seeded draw at every site and never travels.
    assert all(key.endswith(".up") and tensor.shape[1] == 2 for key, tensor in sent.items())
    replies = [m for m in grid.received if m.content.array_records]
    back = _factors(from_record(replies[0].content["arrays"]))
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in sent.items()}
    ups = [k for k in sent if k.endswith(".up")]  # zero at initialisation; trained: not zero
    assert all(torch.count_nonzero(sent[k]) == 0 for k in ups)
    assert sum(int(torch.count_nonzero(back[k])) for k in ups) > 0
    final = _factors(from_record(result.arrays))
    assert all(final[k].shape[1] == 2 for k in ups)


def test_run_local_hands_its_run_config_to_the_sites_too(tmp_path: Path) -> None:
    private = ["privacy.enabled=true", "privacy.noise_multiplier=1.0"]
    config = micro_config(tmp_path, *private)
    assert config.federation.local_steps == 2
    document = to_document(micro_config(tmp_path, *private, "federation.local_steps=1"))
    _, _, grid = run_local(config, run_config={"document": document})
    ledgers = [m.content[LEDGER] for m in grid.received if LEDGER in m.content]
    assert len(ledgers) == 2 * 3  # 2 rounds x 3 sites
    assert {sum(record["steps"]) for record in ledgers} == {1, 2}  # 1 step per round
