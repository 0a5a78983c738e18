"""A message's arrays travel packed: the same bytes, dtypes, shapes and names come out of
Flower's own wire encoding, in under half the objects (requests)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedgray.fl.common.flower_internals import act_as_server
from fedgray.fl.common.packing import LAYOUT, PACKED, pack, packed_mod, unpack


def _arrays() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord(
        {
            "image_in.weight": Array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32)),
            "image_in.bias": Array(rng.standard_normal(3).astype(np.float16)),
            "text_in.gate": Array(np.full((), 0.5, np.float32)),
            "empty": Array(np.zeros((0, 4), np.float32)),
            "codes": Array(rng.integers(-128, 128, (5, 7)).astype(np.int8)),
            **{f"out.{i}": Array(rng.standard_normal((8, 8)).astype(np.float32)) for i in range(5)},
        }
    )


def _same(got: ArrayRecord, want: ArrayRecord) -> None:
    assert list(got) == list(want)  # names, in order
    for name, array in want.items():
        mine = got[name]
        assert (mine.dtype, mine.shape, mine.stype) == (array.dtype, array.shape, array.stype)
        assert mine.data == array.data, name


@pytest.fixture
def message() -> Message:
    act_as_server(run_id=1)
    content = RecordDict(
        {
            "arrays": _arrays(),
            "one": ArrayRecord({"only": Array(np.arange(4, dtype=np.float32))}),
            "config": ConfigRecord({"server-round": 3}),
        }
    )
    return Message(content, 1000, "train")


def test_packed_arrays_come_out_of_flowers_wire_encoding_as_they_went_in(
    message: Message,
) -> None:
    want = _arrays()
    before = len(get_all_nested_objects(message))
    pack(message.content)
    assert list(message.content["arrays"]) == [PACKED]
    assert list(message.content["one"]) == ["only"]  # one array: nothing to gain
    objects = get_all_nested_objects(message)
    assert len(objects) * 2 < before  # each object is one request at each hop
    contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
    arrived = inflate_object_from_contents(message.object_id, contents)
    assert isinstance(arrived, Message)
    unpack(arrived.content)
    _same(arrived.content["arrays"], want)
    assert set(arrived.content) == {"arrays", "one", "config"}  # the layout is gone
    assert arrived.content["config"]["server-round"] == 3


def test_content_that_was_not_packed_is_left_as_it_is(message: Message) -> None:
    unpack(message.content)
    _same(message.content["arrays"], _arrays())
    assert "arrays" + LAYOUT not in message.content


def test_a_site_handles_unpacked_arrays_and_its_reply_leaves_packed(message: Message) -> None:
    seen: list[ArrayRecord] = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(msg.content["arrays"])
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    pack(message.content)
    context = Context(0, 1000, {}, RecordDict(), {})
    reply = packed_mod(message, context, handler)
    _same(seen[0], _arrays())
    assert list(reply.content["arrays"]) == [PACKED]
    _same(unpack(reply.content)["arrays"], _arrays())

    def failing(msg: Message, context: Context) -> Message:
        return Message(Error(code=1, reason="refused"), reply_to=msg)

    refused = packed_mod(message, context, failing)
    assert refused.has_error() and refused.error.reason == "refused"
