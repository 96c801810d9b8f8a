"""The router channel: many client-API calls multiplexed over one WebSocket.

Over plain HTTP every GetItem, PutItem batch or Query a router forwards costs a
request and a response of HTTP machinery on both ends, and one send() each way.
A router instead opens one WebSocket per storage node (`GET /v1/p/channel`,
the same bearer token as the HTTP client API) and sends many calls per frame:

- router -> node: a binary message holding a msgpack array of `[id, op, pid, body]`;
- node -> router: a binary message holding a msgpack array of `[id, answer]`.

`op` is one of the HTTP client API's paths (`write`, `get`, `mget`, `query`,
`scan`), `body` and `answer` are exactly what that path takes and returns
(errors included, as maps with `error`). Calls run concurrently and answer in
completion order, so a write waiting for its quorum never holds back a read
behind it; answers finished in the same loop iteration leave in one frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from kynamo.storage_node import metrics as m
from kynamo.storage_node import wireapi as w

from kynamo.channel_frames import MAX_FRAME, pack_frames, unpack_frame
from kynamo.promcache import child

log = logging.getLogger("kynamo.storage_node.channel")


ClientOp = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# The same operation when it can answer without waiting (an eventual read): the answer, or None to
# take the ClientOp. Answering in the frame's own callback spares a task and a trip round the loop
# per call, and a read no longer queues behind whatever replication work got scheduled meanwhile.
NowOp = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class _Answers:
    """Answers waiting to leave; one writer task sends whatever gathered as one frame."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.pending: list[list[Any]] = []
        self.wake = asyncio.Event()

    def add(self, rid: Any, doc: dict[str, Any]) -> None:
        self.pending.append([rid, doc])
        self.wake.set()

    async def run(self) -> None:
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send what is pending (each frame goes out whole, so two flushes never interleave a frame)."""
        if self.pending:
            batch, self.pending = self.pending, []
            for frame in pack_frames(batch):
                child(m.CHANNEL_FRAMES, "out").inc()
                await self.ws.send_bytes(frame)


async def serve_channel(
    request: web.Request,
    ops: dict[str, ClientOp],
    as_error: Callable[[Exception], w.ApiError],
    open_channels: set[web.WebSocketResponse],
    *,
    now_ops: dict[str, NowOp] | None = None,
) -> web.WebSocketResponse:
    """Serve one router's channel until it closes.

    `as_error` names an exception as the HTTP API would; `open_channels` holds the open
    ones, which the node closes first when it stops (else shutdown waits for the routers).
    `now_ops` answer calls that need no wait inside the frame's callback; their answers
    leave before the next frame is read.
    """
    now_ops = now_ops or {}
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False)
    await ws.prepare(request)
    open_channels.add(ws)
    m.CHANNELS_OPEN.inc()
    answers = _Answers(ws)
    writer = asyncio.create_task(answers.run())
    calls: set[asyncio.Task[None]] = set()

    async def call(rid: Any, op: ClientOp, pid: str, body: dict[str, Any]) -> None:
        try:
            doc = await op(pid, body)
        except Exception as exc:
            doc = as_error(exc).body()
        answers.add(rid, doc)

    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            child(m.CHANNEL_FRAMES, "in").inc()
            try:
                batch = unpack_frame(msg.data)
                if not isinstance(batch, list):
                    raise TypeError("a frame must be an array of calls")
            except Exception as exc:
                m.CHANNEL_REFUSED.labels("frame").inc()
                log.warning("channel frame refused", extra={"ctx": {"remote": request.remote, "error": str(exc)}})
                await ws.close(code=1003, message=b"frames are msgpack arrays of [id, op, pid, body]")
                break
            for entry in batch:
                if not (isinstance(entry, list) and len(entry) == 4):
                    m.CHANNEL_REFUSED.labels("call").inc()
                    continue  # no id to answer to
                rid, name, pid, body = entry
                op = ops.get(name) if isinstance(name, str) else None
                if op is None or not isinstance(pid, str) or not isinstance(body, dict):
                    m.CHANNEL_REFUSED.labels("call").inc()
                    err = w.ApiError("UnknownPath" if op is None else w.BAD_REQUEST,
                                     f"not a client call: {name!r} on {pid!r}")
                    answers.add(rid, err.body())
                    continue
                m.CHANNEL_CALLS.inc()
                now = now_ops.get(name)
                if now is not None:
                    try:
                        doc = now(pid, body)
                    except Exception as exc:
                        doc = as_error(exc).body()
                    if doc is not None:
                        m.CHANNEL_CALLS_AT_ONCE.inc()
                        answers.pending.append([rid, doc])  # flushed below, without waking the writer
                        continue
                task = asyncio.create_task(call(rid, op, pid, body))
                calls.add(task)
                task.add_done_callback(calls.discard)
            await answers.flush()
    finally:
        m.CHANNELS_OPEN.dec()
        open_channels.discard(ws)
        writer.cancel()
        # Calls in progress finish (a proposed write still commits); their answers have nowhere to go.
    return ws
