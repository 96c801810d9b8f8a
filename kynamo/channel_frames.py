"""Frames of the router channel (storage-node/channel.py, kynamo/node_channel.py).

A frame is one WebSocket binary message holding a msgpack array of calls or
answers. Both ends pack what gathered in one loop iteration, but never more
than FRAME_TARGET bytes per frame (save a single element larger than that):
a burst of 1 MB Query pages must not become one frame over the receiver's
MAX_FRAME limit, which would drop the channel and every call on it.
"""

from __future__ import annotations

from typing import Any

import msgpack

CHANNEL_PATH = "/v1/p/channel"
MAX_FRAME = 64 << 20  # what a receiver accepts: the HTTP API's body limit
FRAME_TARGET = 1 << 20  # what a sender puts in one frame when it has more than one element


def pack_frames(elements: list[Any], target: int = FRAME_TARGET) -> list[bytes]:
    """`elements` as msgpack arrays of consecutive elements, each at most `target` bytes unless one element is.

    One pack in the common case; an oversized frame is halved until each part fits.
    """
    data = msgpack.packb(elements, use_bin_type=True)
    if len(data) <= target or len(elements) <= 1:
        return [data]
    mid = len(elements) // 2
    return pack_frames(elements[:mid], target) + pack_frames(elements[mid:], target)


def unpack_frame(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
