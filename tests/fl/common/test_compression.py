"""``federation.compression: int8``: what travels, that nothing of an update is lost (error
feedback), that a compressed federation trains as an uncompressed one, and resumes exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord

from fedgray.config import ConfigError
from fedgray.fl.common.compression import (
    SCALES,
    decode_down,
    decode_up,
    encode_down,
    encode_up,
    snap,
)
from fedgray.fl.common.records import from_record, record_bytes, to_record
from fedgray.fl.serverapp import loop
from fedgray.fl.serverapp.server import initial_adapters
from fedgray.fl.simulation.engine import open_run
from fedgray.resolver import load_config
from tests.helpers import assert_close, micro_config, run_local

INT8 = ["federation.compression=int8"]


def _state(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(64, 256, generator=generator),
        "b": torch.randn(64, generator=generator),
    }


def test_an_update_travels_as_int8_rows_within_half_a_step_of_its_value() -> None:
    reference, new = _state(0), _state(1)
    record, residual = encode_up(new, reference, {})
    sent = from_record(record)
    assert sent["w"].dtype == sent["b"].dtype == torch.int8
    assert sent[SCALES].shape == (64 + 1,)  # one per row of w, one for the vector b
    decoded = from_record(decode_up(record, reference))
    for key, step in zip(new, (sent[SCALES][:64].max(), sent[SCALES][64]), strict=True):
        assert (decoded[key] - new[key]).abs().max() <= step / 2 + 1e-6
        assert_close(decoded[key] + residual[key], new[key], terms=2)  # all kept
    assert record_bytes(record) < 0.3 * record_bytes(to_record(new))


def test_error_feedback_delivers_what_rounding_drops() -> None:
    """A coordinate far below a row's quantisation step never moves without feedback; with
    it, the sum of what arrives tracks the sum of the updates within one step."""
    reference = {"w": torch.zeros(1, 2)}
    update = torch.tensor([[1.0, 0.001]])  # step 1/127: 0.001 rounds to 0 every time
    arrived, residual = torch.zeros(1, 2), {}
    for _ in range(50):
        record, residual = encode_up({"w": update}, reference, residual)
        arrived += from_record(decode_up(record, reference))["w"]
    assert (arrived - 50 * update).abs().max() <= 1 / 127
    assert arrived[0, 1] > 0.03  # without feedback it would be exactly 0
    no_feedback, _ = encode_up({"w": update}, reference, {})
    assert from_record(decode_up(no_feedback, reference))["w"][0, 1] == 0


def test_the_global_adapters_travel_down_exactly_on_the_float16_grid() -> None:
    state = snap(_state(2))
    record = encode_down(state)
    assert all(a.dtype == torch.float16 for a in from_record(record).values())
    received = decode_down(record)
    assert all(torch.equal(received[k], state[k]) for k in state)
    assert record_bytes(record) < 0.51 * record_bytes(to_record(state))  # .npy headers apart


def test_a_compressed_federation_sends_int8_up_float16_down_and_trains_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrived: list[dict[str, torch.Tensor]] = []  # each site update as it reached the server

    def spy(record: ArrayRecord, reference: dict[str, torch.Tensor]) -> ArrayRecord:
        arrived.append(from_record(record))
        return decode_up(record, reference)

    monkeypatch.setattr(loop, "decode_up", spy)
    plain, _, _ = run_local(micro_config(tmp_path, name="plain"))
    assert arrived == []
    packed, summary, grid = run_local(micro_config(tmp_path, *INT8, name="int8"))
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert all(
        t.dtype == torch.float16 for m in trains for t in from_record(m.content["arrays"]).values()
    )
    assert len(arrived) == 6  # 3 sites x 2 rounds
    for update in arrived:
        assert all(v.dtype == torch.int8 for k, v in update.items() if k != SCALES)
    for before, after in zip(plain.records[1:], packed.records[1:], strict=True):
        # float16 halves and int8 quarters the payload; each array's .npy header (~128
        # bytes) weighs on the micro model's small tensors
        assert after["bytes_down"] < 0.6 * before["bytes_down"]
        assert after["bytes_up"] < 0.4 * before["bytes_up"]
    start = from_record(initial_adapters(micro_config(tmp_path)))
    a, b = from_record(plain.arrays), from_record(packed.arrays)
    for key in a:  # both moved away from the start alike
        trained, apart = (a[key] - start[key]).norm(), (b[key] - a[key]).norm()
        assert trained > 0 and apart < 0.05 * trained, key
    assert summary["bytes_per_site_per_round"] < 0.6 * plain.records[-1]["bytes_down"] * 2


def test_a_compressed_run_resumes_to_the_same_adapters(tmp_path: Path) -> None:
    """The sites' residuals live in their state folders, so a resumed run (new processes,
    no ``context.state``) sends what an uninterrupted one sends."""
    full, _, _ = run_local(micro_config(tmp_path, *INT8, "federation.num_rounds=3", name="a"))
    run_local(micro_config(tmp_path, *INT8, name="b"))
    config, _ = open_run(None, ["federation.num_rounds=3"], resume=tmp_path / "b")
    resumed, _, _ = run_local(config)
    a, b = from_record(full.arrays), from_record(resumed.arrays)
    assert all(torch.equal(a[k], b[k]) for k in a)
    kept = torch.load(next((tmp_path / "a" / "sites" / "site-0").glob("personal-3.pt")))
    assert kept and all(k.startswith("compression-residual/") for k in kept)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["federation.compression=int4"], "federation.compression: unknown compression 'int4'"),
        (
            ["federation.secure_aggregation.enabled=true"],
            "federation.compression: SecAgg+ quantises the sum itself",
        ),
        (["privacy.central.enabled=true"], "federation.compression: central DP bounds"),
    ],
)
def test_compression_refuses_what_it_cannot_keep(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [*INT8, *overrides])
