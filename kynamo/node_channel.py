"""The router's end of the storage nodes' channel (storage-node/channel.py).

One WebSocket per storage node carries every call this process makes to it:
calls made in the same loop iteration leave in one frame, answers come back
in completion order and are matched by id. A node that does not serve the
channel (a version from before it) is remembered, and its calls go over plain
HTTP as before. A broken channel fails the calls on it with ConnectionError
(the caller's usual retry path) and is reopened by the next call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from typing import Any

import aiohttp

from kynamo.channel_frames import CHANNEL_PATH, MAX_FRAME, pack_frames, unpack_frame

log = logging.getLogger("kynamo.node_channel")

DEFAULT_TIMEOUT = 60.0
# Pings on an idle channel: a node that stops answering them (gone, or stopped without a RST)
# has its channel closed after about 1.5x this, failing its calls so they retry elsewhere.
HEARTBEAT = 5.0


class ChannelRefused(Exception):
    """The node answered the channel's opening with this HTTP status (401: token; 404: no channel)."""

    def __init__(self, address: str, status: int) -> None:
        super().__init__(f"{address} refused the channel: HTTP {status}")
        self.status = status


class _Conn:
    """One open WebSocket and the calls waiting on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.outbox: list[list[Any]] = []
        self.wake = asyncio.Event()
        self.last_heard = asyncio.get_running_loop().time()  # when a frame last arrived on it
        self.closer: asyncio.Task[Any] | None = None


class NodeChannel:
    """Calls to one storage node over one WebSocket, opened on first use."""

    def __init__(self, session: aiohttp.ClientSession, address: str, headers: dict[str, str], timeout: float) -> None:
        self.session = session
        self.address = address
        self.headers = headers
        self.timeout = timeout
        self.unsupported = False  # the node has no channel: use HTTP
        self._conn: _Conn | None = None
        self._opening: asyncio.Future[_Conn] | None = None
        self._ids = itertools.count()

    @property
    def pending(self) -> int:
        """Calls sent on this channel and not yet answered (every partition's, from this process)."""
        conn = self._conn
        return len(conn.waiting) if conn is not None else 0

    async def call(self, op: str, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        """The node's answer to one call (a map; errors carry `error`), as the HTTP API gives it."""
        conn = self._conn
        if conn is None or conn.ws.closed:
            conn = await self._open()
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        conn.waiting[rid] = fut
        conn.outbox.append([rid, op, pid, body])
        conn.wake.set()
        sent = loop.time()
        timer = loop.call_later(self.timeout, _expire, fut, self.address)
        try:
            return await fut
        except TimeoutError:
            if conn.last_heard < sent and not conn.ws.closed:
                # Nothing at all came back since this call left: the node is gone or stopped, and a
                # TCP connection can outlive it. Drop the channel; the next call opens a new one.
                log.warning("storage node silent on its channel: closing it",
                            extra={"ctx": {"node": self.address, "seconds": self.timeout}})
                conn.closer = loop.create_task(conn.ws.close())
            raise
        finally:
            timer.cancel()
            conn.waiting.pop(rid, None)

    async def _open(self) -> _Conn:
        if self._opening is None:  # one opening at a time; the calls meanwhile wait for it
            self._opening = asyncio.ensure_future(self._connect())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _connect(self) -> _Conn:
        try:
            ws = await self.session.ws_connect(
                f"http://{self.address}{CHANNEL_PATH}", headers=self.headers, max_msg_size=MAX_FRAME,
                compress=0, autoping=True, heartbeat=HEARTBEAT, timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status in (404, 405):
                self.unsupported = True
            raise ChannelRefused(self.address, err.status) from err
        conn = self._conn = _Conn(ws)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(conn))
        writer = loop.create_task(self._write(conn))
        reader.add_done_callback(lambda _: writer.cancel())
        return conn

    async def _write(self, conn: _Conn) -> None:
        ws = conn.ws
        while not ws.closed:
            await conn.wake.wait()
            conn.wake.clear()
            if conn.outbox:
                batch, conn.outbox = conn.outbox, []
                try:
                    for frame in pack_frames(batch):
                        await ws.send_bytes(frame)
                except Exception as exc:  # the reader sees the close and fails the waiting calls
                    log.debug("channel send failed", extra={"ctx": {"node": self.address, "error": str(exc)}})
                    await ws.close()
                    return

    async def _read(self, conn: _Conn) -> None:
        ws, waiting = conn.ws, conn.waiting
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                conn.last_heard = asyncio.get_running_loop().time()
                for rid, doc in unpack_frame(msg.data):
                    fut = waiting.get(rid)
                    if fut is not None and not fut.done():
                        fut.set_result(doc)
        except Exception as exc:  # a garbled frame: drop the channel, the calls retry on a new one
            log.warning("channel to storage node failed", extra={"ctx": {"node": self.address, "error": str(exc)}})
        finally:
            if self._conn is conn:
                self._conn = None
            await ws.close()
            lost = ConnectionResetError(f"channel to {self.address} closed")
            for fut in list(waiting.values()):
                if not fut.done():
                    fut.set_exception(lost)


def _expire(fut: asyncio.Future[Any], address: str) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no answer from {address} in time"))


class NodeChannels:
    """This session's channels, one per storage node address and token."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._by_key: dict[tuple[str, str], NodeChannel] = {}
        total = session.timeout.total if session.timeout is not None else None
        self.timeout = float(total) if total else DEFAULT_TIMEOUT

    def get(self, address: str, headers: dict[str, str]) -> NodeChannel:
        """The channel to `address` opened with `headers` (the token is checked once, at opening)."""
        key = (address, headers.get("Authorization", ""))
        chan = self._by_key.get(key)
        if chan is None:
            chan = self._by_key[key] = NodeChannel(self.session, address, headers, self.timeout)
        return chan


_REGISTRY: weakref.WeakKeyDictionary[aiohttp.ClientSession, NodeChannels] = weakref.WeakKeyDictionary()


def channels_of(session: aiohttp.ClientSession) -> NodeChannels:
    """The channels that live as long as `session` (its connections carry them)."""
    chans = _REGISTRY.get(session)
    if chans is None:
        chans = _REGISTRY[session] = NodeChannels(session)
    return chans
