"""Codec tests: round trips, frame corruption detection and mutation fuzzing."""

from __future__ import annotations

import random
import time

import crc32c
import msgpack
import pytest
from kynamo.storage_node.codec import (
    HEADER,
    CorruptFrame,
    FrameDecoder,
    FrameStreamError,
    decode_message,
    encode_frame,
    encode_message,
)
from kynamo.storage_node.paxos_types import (
    Accept,
    Accepted,
    Entry,
    EntryKind,
    Handover,
    LeaderCheck,
    LeaderCheckReply,
    Prepare,
    Promise,
)

BIG = 2**64 - 1
ENTRIES = (
    Entry(1, (0, ""), EntryKind.NOOP),
    Entry(BIG, (BIG, "n\u00e9-\U0001f600"), EntryKind.COMMAND, b"\x00\xff" * 100),
    Entry(3, (7, "n1"), EntryKind.CONFIG, b"a|b;c"),
)

MESSAGES = [
    Prepare("a", "b", (5, "a"), 10, 9),
    Prepare("", "", (0, ""), 0, 0),
    Prepare("a", "b", (BIG, "a"), BIG, BIG),
    Promise("b", "a", (5, "a"), True, (5, "a"), ENTRIES, 9, 2),
    Promise("b", "a", (5, "a"), False, (6, "c")),
    Accept("a", "b", (5, "a"), 11, ENTRIES, 10, 123.456),
    Accept("a", "b", (5, "a"), 11, (), 10),  # heartbeat
    Accepted("b", "a", (5, "a"), True, 13, (5, "a"), 123.456),
    Accepted("b", "a", (5, "a"), False, 0, (9, "z")),
    LeaderCheck("c", "b", (5, "a")),
    LeaderCheckReply("b", "c", True, "a", (5, "a")),
    LeaderCheckReply("b", "c", False, None, (0, "")),
    Prepare("b", "c", (6, "b"), 10, 9, (5, "a")),  # a handed-over candidate's
    Handover("a", "b", (5, "a")),
]


def items() -> list[tuple[str, object]]:
    return [(f"table-{i}/p{i}", m) for i, m in enumerate(MESSAGES)]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_round_trip(msg: object) -> None:
    group, back = decode_message(encode_message("g\u00fc", msg))  # type: ignore[arg-type]
    assert group == "g\u00fc" and back == msg and type(back) is type(msg)


def test_decode_message_rejects_garbage() -> None:
    for bad in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb(["g", 99, "a", "b"])):
        with pytest.raises(ValueError):
            decode_message(bad)


def test_frame_round_trip_and_incremental() -> None:
    frames = [encode_frame(items()), encode_frame([]), encode_frame(items()[:3])]
    stream = b"".join(frames)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 7):  # dribble in small pieces
        got.extend(dec.feed(stream[i : i + 7]))
    assert got == [items(), [], items()[:3]]
    assert dec.buffered == 0


def test_flipped_byte_detected_and_next_frame_decodes() -> None:
    good = encode_frame(items())
    bad = bytearray(good)
    bad[HEADER.size + len(good) // 3] ^= 0x01
    out = FrameDecoder().feed(bytes(bad) + good)
    assert isinstance(out[0], CorruptFrame) and out[0].reason == "crc mismatch"
    assert out[1] == items()


def test_valid_crc_bad_body_is_corrupt() -> None:
    for body in (b"\xc1", msgpack.packb({"x": 1}), msgpack.packb([["g", 3, "a"]]), msgpack.packb([[1] * 10])):
        frame = HEADER.pack(len(body), crc32c.crc32c(body)) + body
        out = FrameDecoder().feed(frame + encode_frame(items()[:1]))
        assert isinstance(out[0], CorruptFrame), body
        assert out[1] == items()[:1]


def test_absurd_length_is_stream_error() -> None:
    with pytest.raises(FrameStreamError):
        FrameDecoder().feed(HEADER.pack(1 << 30, 0) + b"xx")


def test_fuzz_mutations() -> None:
    rng = random.Random(1234)
    frames = [encode_frame(items()), encode_frame(items()[:2]), encode_frame([items()[5]])]
    expected = {bytes(f): FrameDecoder().feed(f)[0] for f in frames}
    outcomes = {"corrupt": 0, "stream": 0, "incomplete": 0}
    for _ in range(5000):
        f = rng.choice(frames)
        m = bytearray(f)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(m))
            if op < 0.6:
                m[pos] ^= 1 << rng.randrange(8)
            elif op < 0.8:
                m[pos] = rng.randrange(256)
            elif op < 0.9:
                del m[pos]
            else:
                m.insert(pos, rng.randrange(256))
        if bytes(m) == f:
            continue
        try:
            out = FrameDecoder().feed(bytes(m))
        except FrameStreamError:
            outcomes["stream"] += 1
            continue
        if not out:
            outcomes["incomplete"] += 1
        for frame in out:
            # CRC32C catches every mutation here: nothing but a CorruptFrame may come out.
            assert isinstance(frame, CorruptFrame), (frame, expected[f])
            outcomes["corrupt"] += 1
    # Mutated bodies re-checksummed (a buggy or hostile peer): decoding must never raise.
    for _ in range(3000):
        body = bytearray(rng.choice(frames)[HEADER.size :])
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        frame = HEADER.pack(len(body), crc32c.crc32c(bytes(body))) + bytes(body)
        out = FrameDecoder().feed(frame)
        assert len(out) == 1
    print(f"\nfuzz outcomes: {outcomes}")


def test_codec_speed_smoke() -> None:
    entries = tuple(Entry(i, (3, "node-1"), EntryKind.COMMAND, b"x" * 1024) for i in range(500))
    msg = Accept("node-1", "node-2", (3, "node-1"), 0, entries, 0, 1.0)
    dec = FrameDecoder()
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        out = dec.feed(encode_frame([("g", msg)]))
    dt = time.perf_counter() - t0
    assert out[0] == [("g", msg)]
    print(f"\nAccept x500x1KB encode+decode: {dt / n * 1e3:.3f} ms ({dt / n / 5 * 1e3:.3f} ms per 100 entries)")
