"""Paxos messages <-> bytes, and CRC32C-framed batches of (group, message) pairs.

Messages are msgpack arrays (positional, ballots flattened) because peers exchange them at
high rates: no key strings on the wire, and C-speed packing. A frame is
``u32 body length | u32 crc32c(body) | body`` where body is a msgpack array of messages.

Everything decoded comes from the network, so decoding validates every field's type and a
body that fails (even with a good CRC) is reported as a CorruptFrame, never an exception.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import crc32c
import msgpack
from kynamo.storage_node.paxos_types import (
    Accept,
    Accepted,
    Entry,
    EntryKind,
    Handover,
    LeaderCheck,
    LeaderCheckReply,
    Message,
    Prepare,
    Promise,
)

HEADER = struct.Struct("<II")  # body length, crc32c(body)
MAX_FRAME = 64 << 20  # a longer length field means the stream is garbage

_PREPARE, _PROMISE, _ACCEPT, _ACCEPTED, _CHECK, _CHECK_REPLY, _HANDOVER = range(1, 8)
_KINDS = {int(k): k for k in EntryKind}

Item = tuple[str, Message]


class FrameStreamError(Exception):
    """The byte stream cannot be resynchronised (absurd length): close the connection."""


@dataclass(frozen=True, slots=True)
class CorruptFrame:
    """A frame that failed its CRC or could not be decoded; the caller drops and counts it."""

    reason: str
    size: int


class _Bad(Exception):
    pass


# ------------------------------------------------------------------ encoding
def _entries_out(entries: Iterable[Entry]) -> list[list]:
    return [[e.index, e.ballot[0], e.ballot[1], int(e.kind), e.data] for e in entries]


def message_to_list(group: str, m: Message) -> list:
    """Positional form of one message (the element type of a frame body)."""
    t = type(m)
    if t is Accept:
        return [group, _ACCEPT, m.src, m.dst, m.ballot[0], m.ballot[1], m.start, _entries_out(m.entries),
                m.commit, float(m.sent_at)]
    if t is Accepted:
        return [group, _ACCEPTED, m.src, m.dst, m.ballot[0], m.ballot[1], m.ok, m.match, m.promised[0],
                m.promised[1], float(m.sent_at)]
    if t is Prepare:
        out = [group, _PREPARE, m.src, m.dst, m.ballot[0], m.ballot[1], m.from_index, m.commit]
        if m.handover is not None:  # older peers know only the 8-field form, which stays the common one
            out += [m.handover[0], m.handover[1]]
        return out
    if t is Handover:
        return [group, _HANDOVER, m.src, m.dst, m.ballot[0], m.ballot[1]]
    if t is Promise:
        return [group, _PROMISE, m.src, m.dst, m.ballot[0], m.ballot[1], m.ok, m.promised[0], m.promised[1],
                _entries_out(m.entries), m.commit, m.log_start]
    if t is LeaderCheck:
        return [group, _CHECK, m.src, m.dst, m.ballot[0], m.ballot[1]]
    if t is LeaderCheckReply:
        return [group, _CHECK_REPLY, m.src, m.dst, m.healthy, m.leader, m.ballot[0], m.ballot[1]]
    raise TypeError(f"not a Paxos message: {t.__name__}")


def encode_message(group: str, m: Message) -> bytes:
    return msgpack.packb(message_to_list(group, m), use_bin_type=True)


def encode_frame(items: Iterable[Item]) -> bytes:
    """Batch many (group, message) pairs into one checksummed frame."""
    body = msgpack.packb([message_to_list(g, m) for g, m in items], use_bin_type=True)
    return HEADER.pack(len(body), crc32c.crc32c(body)) + body


# ------------------------------------------------------------------ decoding
def _int(v: object) -> int:
    if type(v) is not int:
        raise _Bad("int expected")
    return v  # type: ignore[return-value]


def _str(v: object) -> str:
    if type(v) is not str:
        raise _Bad("str expected")
    return v  # type: ignore[return-value]


def _bool(v: object) -> bool:
    if type(v) is not bool:
        raise _Bad("bool expected")
    return v  # type: ignore[return-value]


def _float(v: object) -> float:
    if type(v) is float:
        return v  # type: ignore[return-value]
    if type(v) is int:
        return float(v)  # type: ignore[arg-type]
    raise _Bad("float expected")


def _entries_in(raw: object) -> tuple[Entry, ...]:
    if type(raw) is not list:
        raise _Bad("entry list expected")
    out = []
    kinds = _KINDS
    for e in raw:  # type: ignore[attr-defined]
        if type(e) is not list or len(e) != 5:
            raise _Bad("entry shape")
        i, r, n, k, d = e
        if type(i) is not int or type(r) is not int or type(n) is not str or type(d) is not bytes:
            raise _Bad("entry field types")
        kind = kinds.get(k) if type(k) is int else None
        if kind is None:
            raise _Bad("entry kind")
        out.append(Entry(i, (r, n), kind, d))
    return tuple(out)


def _shape(v: list, n: int) -> None:
    if len(v) != n:
        raise _Bad("message length")


def message_from_list(v: object) -> Item:
    """Validate and build one message; raises _Bad (internal) on any malformed input."""
    if type(v) is not list or len(v) < 4:
        raise _Bad("message shape")
    group, tag = _str(v[0]), v[1]
    src, dst = _str(v[2]), _str(v[3])
    m: Message
    if tag == _ACCEPT:
        _shape(v, 10)
        m = Accept(src, dst, (_int(v[4]), _str(v[5])), _int(v[6]), _entries_in(v[7]), _int(v[8]), _float(v[9]))
    elif tag == _ACCEPTED:
        _shape(v, 11)
        m = Accepted(src, dst, (_int(v[4]), _str(v[5])), _bool(v[6]), _int(v[7]), (_int(v[8]), _str(v[9])),
                     _float(v[10]))
    elif tag == _PREPARE:
        if len(v) == 10:
            m = Prepare(src, dst, (_int(v[4]), _str(v[5])), _int(v[6]), _int(v[7]), (_int(v[8]), _str(v[9])))
        else:
            _shape(v, 8)
            m = Prepare(src, dst, (_int(v[4]), _str(v[5])), _int(v[6]), _int(v[7]))
    elif tag == _HANDOVER:
        _shape(v, 6)
        m = Handover(src, dst, (_int(v[4]), _str(v[5])))
    elif tag == _PROMISE:
        _shape(v, 12)
        m = Promise(src, dst, (_int(v[4]), _str(v[5])), _bool(v[6]), (_int(v[7]), _str(v[8])),
                    _entries_in(v[9]), _int(v[10]), _int(v[11]))
    elif tag == _CHECK:
        _shape(v, 6)
        m = LeaderCheck(src, dst, (_int(v[4]), _str(v[5])))
    elif tag == _CHECK_REPLY:
        _shape(v, 8)
        leader = v[5]
        if leader is not None:
            leader = _str(leader)
        m = LeaderCheckReply(src, dst, _bool(v[4]), leader, (_int(v[6]), _str(v[7])))
    else:
        raise _Bad("unknown message tag")
    return group, m


def _unpack(body: bytes) -> object:
    return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)


def decode_message(data: bytes) -> Item:
    """Decode one encode_message() result; raises ValueError when malformed."""
    try:
        return message_from_list(_unpack(data))
    except Exception as exc:  # hostile input: any decoder failure means "malformed"
        raise ValueError(f"malformed message: {exc}") from exc


def decode_body(body: bytes) -> list[Item] | CorruptFrame:
    try:
        raw = _unpack(body)
        if type(raw) is not list:
            raise _Bad("frame body is not a list")
        return [message_from_list(v) for v in raw]  # type: ignore[attr-defined]
    except Exception as exc:  # hostile input must never escape as an exception
        return CorruptFrame(f"undecodable body: {exc}", len(body))


class FrameDecoder:
    """Incremental frame splitter for one byte stream (one per connection)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[list[Item] | CorruptFrame]:
        """Return every frame completed by `data`, in order; CorruptFrame for bad ones.

        Raises FrameStreamError when a length field is beyond the sane maximum.
        """
        buf = self._buf
        buf += data
        out: list[list[Item] | CorruptFrame] = []
        pos, end = 0, len(buf)
        hsize = HEADER.size
        while end - pos >= hsize:
            length, crc = HEADER.unpack_from(buf, pos)
            if length > self._max:
                raise FrameStreamError(f"frame length {length} exceeds {self._max}")
            if end - pos - hsize < length:
                break
            body = bytes(buf[pos + hsize : pos + hsize + length])
            pos += hsize + length
            if crc32c.crc32c(body) != crc:
                out.append(CorruptFrame("crc mismatch", length))
            else:
                out.append(decode_body(body))
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
