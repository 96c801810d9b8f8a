"""Transport tests over real sockets on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kynamo.storage_node.codec import HEADER, encode_frame
from kynamo.storage_node.paxos_types import Accept, Accepted, Entry, EntryKind, Message, Prepare
from kynamo.storage_node.transport import ACCEPTED, PeerTransport, handshake_bytes


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[str, Message]] = []
        self.batches = 0

    def __call__(self, batch: list[tuple[str, Message]]) -> None:
        self.items.extend(batch)
        self.batches += 1


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def prep(i: int) -> Prepare:
    return Prepare("a", "b", (i, "a"), i, i)


async def pair(token_a: str | None = None, token_b: str | None = None) -> tuple[PeerTransport, Sink,
                                                                               PeerTransport, Sink]:
    sa, sb = Sink(), Sink()
    a = PeerTransport("a", sa, auth_token=token_a)
    b = PeerTransport("b", sb, auth_token=token_b)
    pa, pb = await a.start("127.0.0.1", 0), await b.start("127.0.0.1", 0)
    a.self_address, b.self_address = f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"
    return a, sa, b, sb


def test_exchange_in_order() -> None:
    async def main() -> None:
        a, sa, b, sb = await pair("tok", "tok")
        n = 5000
        for i in range(n):
            a.send(b.self_address, f"g{i % 7}", prep(i))
            b.send(a.self_address, "g", Accepted("b", "a", (1, "a"), True, i, (1, "a"), float(i)))
            if i % 500 == 0:
                await asyncio.sleep(0)
        await until(lambda: len(sb.items) == n and len(sa.items) == n)
        assert sb.items == [(f"g{i % 7}", prep(i)) for i in range(n)]
        assert [m.match for _, m in sa.items] == list(range(n))  # type: ignore[union-attr]
        assert a.frames_sent < n  # coalesced into batches
        assert b.frames_received == a.frames_sent and b.messages_received == n
        assert a.bytes_sent == b.bytes_received
        assert a.corrupt_frames == b.corrupt_frames == 0
        await a.close()
        await b.close()

    run(main())


def test_peer_restart_reconnects() -> None:
    async def main() -> None:
        a, _sa, b, sb = await pair()
        addr = b.self_address
        port = int(addr.rsplit(":", 1)[1])
        a.send(addr, "g", prep(1))
        await until(lambda: len(sb.items) == 1)
        await b.close()
        for i in range(2, 5):  # sent while the peer is down: may be lost, must not break anything
            a.send(addr, "g", prep(i))
        await asyncio.sleep(0.2)
        sb2 = Sink()
        b2 = PeerTransport(addr, sb2)
        await b2.start("127.0.0.1", port)
        # keep sending until one arrives over the new connection; after that, order holds
        i = 100
        while not sb2.items:
            a.send(addr, "g", prep(i))
            i += 1
            await asyncio.sleep(0.05)
        last = i
        for j in range(last, last + 100):
            a.send(addr, "g", prep(j))
        await until(lambda: sb2.items[-1][1] == prep(last + 99))
        got = [m.ballot[0] for _, m in sb2.items]  # type: ignore[union-attr]
        assert got == sorted(got) and got[-100:] == list(range(last, last + 100))
        assert a.reconnects >= 1
        await a.close()
        await b2.close()

    run(main())


def test_dead_peer_queue_expires() -> None:
    async def main() -> None:
        sink = Sink()
        a = PeerTransport("a", sink, max_queue=10, max_age=0.1)
        for i in range(25):
            a.send("127.0.0.1:1", "g", prep(i))  # nothing listens on port 1
        assert a.dropped_messages == 15
        await until(lambda: a.dropped_messages == 25 and a.connect_failures >= 1)
        await a.close()

    run(main())


def test_corrupt_frame_dropped_and_next_delivered() -> None:
    async def main() -> None:
        sink = Sink()
        b = PeerTransport("b", sink, auth_token="s3cret")
        port = await b.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake_bytes("raw", "s3cret"))
        assert await reader.readexactly(1) == ACCEPTED
        bad = bytearray(encode_frame([("g", prep(1)), ("g", prep(2))]))
        bad[HEADER.size + 5] ^= 0x10
        writer.write(bytes(bad) + encode_frame([("g", prep(3))]))
        await writer.drain()
        await until(lambda: len(sink.items) == 1)
        assert sink.items == [("g", prep(3))]
        assert b.corrupt_frames == 1 and b.frames_received == 1
        writer.write(HEADER.pack(1 << 30, 0))  # insane length: the listener hangs up
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert b.stream_errors == 1
        writer.close()
        await b.close()

    run(main())


def test_wrong_auth_token_rejected() -> None:
    async def main() -> None:
        a, _sa, b, sb = await pair("wrong", "right")
        a.send(b.self_address, "g", prep(1))
        await until(lambda: b.auth_failures >= 1 and a.connect_failures >= 1)
        await asyncio.sleep(0.1)
        assert sb.items == []
        # a raw client with a bad token is closed without an acknowledgement
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        writer.write(handshake_bytes("raw", "nope") + encode_frame([("g", prep(2))]))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert sb.items == []
        await a.close()
        await b.close()

    run(main())


def test_throughput_smoke() -> None:
    async def main() -> None:
        a, _sa, b, sb = await pair()
        data = b"x" * 100
        n = 100_000
        t0 = time.perf_counter()
        for i in range(n):
            a.send(b.self_address, "g", Accept("a", "b", (1, "a"), i, (Entry(i, (1, "a"), EntryKind.COMMAND, data),),
                                               i))
            if a.queued(b.self_address) > 5000:  # stay below the drop cap
                await until(lambda: a.queued(b.self_address) < 1000)
        await until(lambda: len(sb.items) == n, 60)
        assert a.dropped_messages == 0
        dt = time.perf_counter() - t0
        print(f"\ntransport: {n / dt:,.0f} messages/s, {a.frames_sent} frames, dropped {a.dropped_messages}")
        await a.close()
        await b.close()

    run(main())


def test_stalled_peer_connection_is_replaced() -> None:
    """A peer that accepts but never reads (gray failure) makes drain time out; we redial."""

    async def main() -> None:
        conns: list[asyncio.StreamWriter] = []
        hold = asyncio.Event()

        async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(len(handshake_bytes("127.0.0.1:1", None)))
            writer.write(ACCEPTED)
            conns.append(writer)
            await hold.wait()  # never read again

        server = await asyncio.start_server(stalled, "127.0.0.1", 0)
        addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        a = PeerTransport("127.0.0.1:1", Sink(), drain_timeout=0.2)
        big = (Entry(1, (1, "a"), EntryKind.COMMAND, b"z" * 100_000),)
        for i in range(400):
            a.send(addr, "g", Accept("a", "b", (1, "a"), i, big, 0))
        await until(lambda: len(conns) >= 2)
        assert a.reconnects >= 1
        await a.close()
        hold.set()
        for w in conns:
            w.transport.abort()
        server.close()

    run(main())


def test_handler_exception_keeps_connection() -> None:
    async def main() -> None:
        got: list[tuple[str, Message]] = []

        def handler(batch: list[tuple[str, Message]]) -> None:
            got.extend(batch)
            if len(got) == 1:
                raise RuntimeError("boom")

        a, _sa, b, _sb = await pair()
        b.on_messages = handler
        a.send(b.self_address, "g", prep(1))
        await until(lambda: len(got) == 1)
        a.send(b.self_address, "g", prep(2))
        await until(lambda: len(got) == 2)
        assert a.reconnects == 0
        await a.close()
        await b.close()

    run(main())
