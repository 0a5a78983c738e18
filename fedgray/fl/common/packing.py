"""One array per ArrayRecord on the wire: what makes a deployed message a handful of requests.

Flower 1.42 moves a message between processes object by object (the message, each record,
each array and each chunk of an array), one HTTP request per object at each hop, and a
deployed round makes six hops (ServerApp, SuperLink, SuperNode, ClientApp and back). A
site's adapters are a dozen small tensors, so most of a round's requests each carried a
few hundred bytes, and on one machine the SuperLink's work on them was most of a round.
Before a message leaves, :func:`pack` turns each ArrayRecord of two or more arrays into one
array of their bytes, its layout (names, dtypes, shapes, serialisation) in a ConfigRecord
beside it; :func:`unpack` rebuilds the same arrays, byte for byte, where it arrives. A
train message of the tiny model goes from 16 objects to 7.

The server packs and unpacks in :func:`fedgray.fl.serverapp.exchange.arriving`, the one
place every phase sends through (SecAgg+'s stages included); a site does both around every
handler (:func:`packed_mod`). Content with no packed record is left as it is.
"""

from __future__ import annotations

import json
from typing import cast

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

PACKED = "fedgray.packed"
"""The key of the one array a packed ArrayRecord holds, and that array's ``stype``."""
LAYOUT = ".layout"
"""The suffix of the ConfigRecord (beside the ArrayRecord) that holds its layout."""


def _array_records(content: RecordDict) -> list[tuple[str, ArrayRecord]]:
    """``content``'s ArrayRecords. Not ``content.array_records``: each read of it builds a
    view in a reference cycle that keeps the records alive until the garbage collector
    runs, and a server folding updates as they arrive must let each one go at once."""
    return [(key, value) for key, value in content.items() if isinstance(value, ArrayRecord)]


def pack(content: RecordDict) -> RecordDict:
    """``content`` with each ArrayRecord of two or more arrays packed (in place)."""
    for key, record in _array_records(content):
        if len(record) < 2:
            continue
        arrays = list(record.items())
        layout = [[name, a.dtype, list(a.shape), a.stype, len(a.data)] for name, a in arrays]
        data = b"".join(a.data for _, a in arrays)
        content[key] = ArrayRecord({PACKED: Array("uint8", (len(data),), PACKED, data)})
        content[key + LAYOUT] = ConfigRecord({"layout": json.dumps(layout)})
    return content


def unpack(content: RecordDict) -> RecordDict:
    """``content`` with each packed ArrayRecord as the arrays it was made of (in place)."""
    for key, record in _array_records(content):
        layout_record = content.get(key + LAYOUT)
        if PACKED not in record or not isinstance(layout_record, ConfigRecord):
            continue
        layout = json.loads(cast(str, layout_record["layout"]))
        data, start, arrays = record[PACKED].data, 0, {}
        for name, dtype, shape, stype, size in layout:
            arrays[name] = Array(dtype, tuple(shape), stype, data[start : start + size])
            start += size
        content[key] = ArrayRecord(arrays)
        del content[key + LAYOUT]
    return content


def packed_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A site's side: the message's arrays unpacked before any handler or mod sees them,
    the reply's packed after."""
    unpack(msg.content)
    reply = call_next(msg, context)
    if not reply.has_error():
        pack(reply.content)
    return reply
