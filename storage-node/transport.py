"""Persistent peer connections carrying CRC32C-framed batches of Paxos messages.

One PeerTransport per storage-node process. Connections are one-way: each process dials
every peer it sends to, and receives on its own listener, so a slow receiver never blocks
another direction. Each destination has a queue and a writer task that coalesces whatever
is queued into one frame per write (batching across all groups), and reconnects with
backoff. While a peer is down, messages older than `max_age` or beyond `max_queue` are
dropped: Paxos tolerates loss, and stale messages only cost work on arrival.

Handshake (dialer -> listener)::

    b"KYNP" | u8 version | u16 len + sender address | u16 len + auth token

The listener answers one byte (1 = accepted) or closes the connection on a bad token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable

from kynamo.storage_node.codec import MAX_FRAME, CorruptFrame, FrameDecoder, FrameStreamError, encode_frame
from kynamo.storage_node.paxos_types import Accept, Message, Promise

from kynamo.tokens import accepts, presented_token, token_list

log = logging.getLogger(__name__)

MAGIC = b"KYNP"
VERSION = 1
ACCEPTED = b"\x01"
_U16 = struct.Struct("<H")
_FRAME_TARGET = 1 << 20  # coalesce up to ~1 MiB per frame: batching without long loop stalls
_DRAIN_ABOVE = 1 << 16  # bytes queued in the socket buffer before the pump waits for it to drain
_HANDSHAKE_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 3.0

OnMessages = Callable[[list[tuple[str, Message]]], None]
OnCounter = Callable[[str, int], None]


def _approx_size(msg: Message) -> int:
    """Cheap upper-ish bound on the encoded size, to keep frames bounded without encoding twice."""
    if type(msg) is Accept or type(msg) is Promise:
        return 96 + sum(len(e.data) + len(e.ballot[1]) + 32 for e in msg.entries)
    return 96


def handshake_bytes(address: str, token: str | None) -> bytes:
    """The connection's first bytes; with several comma-separated tokens (rotation), the first is sent."""
    a, t = address.encode(), (presented_token(token) or "").encode()
    return MAGIC + bytes([VERSION]) + _U16.pack(len(a)) + a + _U16.pack(len(t)) + t


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Peer:
    """Outbound state for one destination address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.queue: deque[tuple[float, str, Message]] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connected_once = False
        self.failing = False


class PeerTransport:
    """Sends (group, message) pairs to peers by address and delivers received batches in order."""

    def __init__(
        self,
        self_address: str,
        on_messages: OnMessages,
        *,
        auth_token: str | None = None,
        on_counter: OnCounter | None = None,
        max_queue: int = 10_000,
        max_age: float = 1.0,
        max_backoff: float = 2.0,
        idle_timeout: float = 60.0,
        drain_timeout: float = 5.0,
    ) -> None:
        self.self_address = self_address
        self.on_messages = on_messages
        self.auth_token = auth_token
        self.on_counter = on_counter
        self.max_queue = max_queue
        self.max_age = max_age
        self.max_backoff = max_backoff
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.port: int | None = None
        # counters: the shell reads them (frames, messages, bytes: plain integers, no callback per
        # frame) or hears of them through on_counter (the rare ones: drops, failures, corruption)
        self.frames_sent = 0
        self.frames_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.corrupt_frames = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.dropped_messages = 0
        self.auth_failures = 0
        self.stream_errors = 0
        self._peers: dict[str, _Peer] = {}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[None]] = set()
        self._closed = False

    def _count(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)
        if self.on_counter is not None:
            self.on_counter(name, n)

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> int:
        """Listen for peers; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=1 << 20, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None] + list(self._inbound)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in self._peers.values():
            if p.writer is not None:
                p.writer.close()
        self._peers.clear()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ sending
    def send(self, address: str, group: str, msg: Message) -> None:
        """Queue a message for `address` ("host:port"); never blocks, may drop when the peer is down."""
        if self._closed:
            return
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(address)
            peer.task = asyncio.get_running_loop().create_task(self._run_peer(peer), name=f"peer-send {address}")
        if len(peer.queue) >= self.max_queue:
            peer.queue.popleft()
            self._count("dropped_messages")
        peer.queue.append((time.monotonic(), group, msg))
        peer.wakeup.set()

    def queued(self, address: str) -> int:
        """Messages waiting for `address`: lets a caller apply backpressure before the cap drops."""
        peer = self._peers.get(address)
        return len(peer.queue) if peer is not None else 0

    def _expire(self, peer: _Peer) -> None:
        cutoff = time.monotonic() - self.max_age
        q, n = peer.queue, 0
        while q and q[0][0] < cutoff:
            q.popleft()
            n += 1
        if n:
            self._count("dropped_messages", n)

    async def _run_peer(self, peer: _Peer) -> None:
        backoff = 0.05
        idle_since = time.monotonic()
        while not self._closed:
            if peer.writer is None:
                if peer.queue:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.idle_timeout:
                    # Nobody has sent here for a while (e.g. a removed member): stop dialing.
                    self._peers.pop(peer.address, None)
                    return
                try:
                    reader, writer = await self._dial(peer.address)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    self._count("connect_failures")
                    if not peer.failing:
                        log.warning("peer %s unreachable (will retry): %r", peer.address, exc)
                    peer.failing = True
                    self._expire(peer)
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if peer.connected_once:
                    self._count("reconnects")
                peer.connected_once = True
                peer.failing = False
                peer.writer = writer
                backoff = 0.05
                try:
                    await self._pump(peer, reader, writer)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    log.info("connection to peer %s lost: %r", peer.address, exc)
                finally:
                    peer.writer = None
                    idle_since = time.monotonic()
                    # abort, not close: close() would wait to flush what a dead peer never reads
                    writer.transport.abort()

    async def _dial(self, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = _split_address(address)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _CONNECT_TIMEOUT)
        try:
            writer.write(handshake_bytes(self.self_address, self.auth_token))
            reply = await asyncio.wait_for(reader.readexactly(1), _HANDSHAKE_TIMEOUT)
            if reply != ACCEPTED:
                raise ConnectionError(f"peer {address} refused handshake")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _pump(self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write coalesced frames until the connection drops (the peer never sends after the handshake,
        so a completed read means it closed).

        The loop costs one Event wait per wake-up and a drain only when the socket buffer backs up:
        no task, `asyncio.wait` or `wait_for` per frame.
        """
        eof = asyncio.ensure_future(reader.read(1))
        eof.add_done_callback(lambda _: peer.wakeup.set())
        transport = writer.transport
        try:
            while not self._closed:
                if eof.done():
                    raise ConnectionError("peer closed the connection")
                if not peer.queue:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue
                self._expire(peer)
                if not peer.queue:
                    continue
                frame, count = self._take_frame(peer)
                if not frame:
                    continue
                writer.write(frame)
                if transport.get_write_buffer_size() >= _DRAIN_ABOVE:
                    # A partitioned peer never drains: give up on the connection rather than wait
                    # for TCP to notice, so the queue keeps expiring and a fresh dial can succeed.
                    async with asyncio.timeout(self.drain_timeout):
                        await writer.drain()
                self.messages_sent += count  # hot counters: plain integers, read by the shell
                self.frames_sent += 1
                self.bytes_sent += len(frame)
        finally:
            eof.cancel()
            if eof.done() and not eof.cancelled():
                eof.exception()  # retrieved, so asyncio does not log it as never retrieved

    def _take_frame(self, peer: _Peer) -> tuple[bytes, int]:
        """Pop queued messages up to the frame target size and encode them as one frame."""
        q, items, size = peer.queue, [], 0
        while q and (not items or size + _approx_size(q[0][2]) <= _FRAME_TARGET):
            _, group, msg = q.popleft()
            items.append((group, msg))
            size += _approx_size(msg) + len(group)
        frame = encode_frame(items)
        if len(frame) - 8 > MAX_FRAME:
            # One message the receiver would refuse (and close the stream over): drop it.
            log.error("dropping %d message(s) to %s: frame of %d bytes exceeds limit", len(items),
                      peer.address, len(frame))
            self._count("dropped_messages", len(items))
            return b"", 0
        return frame, len(items)

    # ------------------------------------------------------------ receiving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        peername = writer.get_extra_info("peername")
        who = f"{peername[0]}:{peername[1]}" if peername else "?"
        try:
            sender = await asyncio.wait_for(self._accept_handshake(reader), _HANDSHAKE_TIMEOUT)
            if sender is None:
                self._count("auth_failures")
                log.warning("peer connection from %s rejected: bad handshake or auth token", who)
                return
            who = f"{sender} ({who})"
            writer.write(ACCEPTED)
            await writer.drain()
            await self._receive(reader, who)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.debug("peer connection from %s ended: %s", who, exc)
        except asyncio.CancelledError:
            # Top-level handler owned by asyncio.start_server, cancelled only by close(): a
            # re-raise here would be reported as an "unhandled exception in client_connected_cb".
            pass
        finally:
            self._inbound.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _accept_handshake(self, reader: asyncio.StreamReader) -> str | None:
        head = await reader.readexactly(len(MAGIC) + 1 + _U16.size)
        if head[:4] != MAGIC or head[4] != VERSION:
            return None
        sender = await reader.readexactly(_U16.unpack_from(head, 5)[0])
        token = await reader.readexactly(_U16.unpack(await reader.readexactly(_U16.size))[0])
        expected = [t.encode() for t in token_list(self.auth_token)]
        if expected and not accepts(expected, token):  # any of the listed tokens (rotation)
            return None
        return sender.decode(errors="replace")

    async def _receive(self, reader: asyncio.StreamReader, who: str) -> None:
        decoder = FrameDecoder()
        while not self._closed:
            data = await reader.read(1 << 18)
            if not data:
                return
            self.bytes_received += len(data)
            try:
                frames = decoder.feed(data)
            except FrameStreamError as exc:
                self._count("stream_errors")
                log.warning("closing peer connection from %s: %s", who, exc)
                return
            for frame in frames:
                if isinstance(frame, CorruptFrame):
                    self._count("corrupt_frames")
                    log.warning("dropped corrupt frame from peer %s: %s (%d bytes)", who, frame.reason,
                                frame.size)
                    continue
                self.frames_received += 1
                self.messages_received += len(frame)
                try:
                    self.on_messages(frame)
                except Exception:
                    log.exception("message handler failed for a frame from %s", who)
