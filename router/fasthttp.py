"""A lean HTTP/1.1 front for the API's hot path, with aiohttp behind it for everything else.

aiohttp spends about as much CPU per request on its own machinery (request and
response objects, routing, middlewares, the stream writer) as the router spends
on a GetItem. SDK traffic is one shape only: `POST /` with a Content-Length body
over keep-alive connections. This protocol parses exactly that shape itself and
answers it through the same `DynamoCall` the aiohttp route uses; the first
request of any other shape (another method or path, chunked bodies, `Expect`,
an upgrade, odd or oversized headers, HTTP/1.0) hands the connection, with the
bytes it holds, to aiohttp's own protocol for good. So every case aiohttp
handled is still handled by aiohttp, and the common case skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from zlib import crc32

log = logging.getLogger("kynamo.router.http")

# (method, raw path, raw query, header lookup, raw body) -> (status, body, request id)
DynamoCall = Callable[[str, str, str, Callable[[str], tuple[str, ...]], bytes], Awaitable[tuple[int, bytes, str]]]
# The same, answered at once without a task when it can be (a throttled table's refusal), else None
EarlyCall = Callable[[str, str, str, Callable[[str], tuple[str, ...]], bytes], "tuple[int, bytes, str] | None"]

PAUSE_ABOVE = 1 << 20  # bytes buffered behind a request in progress before reading pauses
MAX_HEAD = 8190  # aiohttp's own line limit: a longer head is aiohttp's to judge
_FALLBACK_NAMES = frozenset(("transfer-encoding", "expect", "upgrade"))
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 header field names
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t\r\n"  # what a head may hold (CR and LF only as CRLF)
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class _Date:
    """The Date header, formatted once a second rather than per response."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, formatdate(t, usegmt=True).encode()
        return cls.value


def response_bytes(status: int, body: bytes, rid: str, crc: int, *, close: bool = False) -> bytes:
    """The whole response in one buffer: one send() per answer."""
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: %s\r\n"
            b"x-amz-crc32: %d\r\nContent-Length: %d\r\nDate: %s\r\n%s\r\n") % (
        status, _REASONS.get(status, b"Unknown"), rid.encode(), crc, len(body), _Date.now(),
        b"Connection: close\r\n" if close else b"")
    return head + body


class FastHttp(asyncio.Protocol):
    """One client connection: SDK-shaped requests served here, anything else handed to aiohttp."""

    __slots__ = ("_buf", "_busy", "_call", "_closing", "_conns", "_early", "_fallback", "_max_body", "_paused",
                 "_task", "_transport")

    def __init__(self, call: DynamoCall, fallback: Callable[[], asyncio.Protocol], max_body: int,
                 conns: set[FastHttp], early: EarlyCall | None = None) -> None:
        self._call = call
        self._early = early
        self._fallback = fallback
        self._max_body = max_body
        self._conns = conns
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False
        self._closing = False
        self._paused = False
        self._task: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self._conns.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conns.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._next()
        elif len(self._buf) > PAUSE_ABOVE and not self._paused and self._transport is not None:
            self._paused = True  # a client pipelining far ahead waits for its answers
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def in_progress(self) -> asyncio.Future[None] | None:
        """The request being answered, if any."""
        return self._task if self._busy else None

    def close_when_idle(self) -> None:
        """Shutting down: close now if idle, else right after the answer in progress."""
        self._closing = True
        if not self._busy:
            self.close()

    # ------------------------------------------------------------ parsing
    def _next(self) -> None:
        """Serve the complete requests in the buffer: early answers at once, the first other one as a task."""
        while True:
            buf = self._buf
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_over()
                return
            req = _parse_head(buf, end)
            if req is None:
                self._hand_over()
                return
            method_path_query, headers, length, close = req
            if length > self._max_body:
                self._hand_over()  # aiohttp answers it as it always did (a ValidationException)
                return
            start = end + 4
            if len(buf) < start + length:
                return  # the body is still arriving
            body = bytes(buf[start:start + length])
            del buf[:start + length]
            if self._early is not None:
                try:
                    answer = self._early(*method_path_query, _lookup(headers), body)
                except Exception:  # a bug: the full path still answers the request
                    log.exception("early answer failed")
                    answer = None
                if answer is not None:
                    if not self._answer(answer, close):
                        return
                    continue
            self._busy = True
            self._task = asyncio.ensure_future(self._serve(method_path_query, headers, body, close))
            return

    def _answer(self, answer: tuple[int, bytes, str], close: bool) -> bool:
        """Write an answer; False when the connection is (now) closed."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        status, payload, rid = answer
        transport.write(response_bytes(status, payload, rid, crc32(payload) & 0xFFFFFFFF, close=close))
        if close or self._closing:
            transport.close()
            return False
        return True

    async def _serve(self, mpq: tuple[str, str, str], headers: dict[str, tuple[str, ...]], body: bytes,
                     close: bool) -> None:
        try:
            status, payload, rid = await self._call(mpq[0], mpq[1], mpq[2], _lookup(headers), body)
            out = response_bytes(status, payload, rid, crc32(payload) & 0xFFFFFFFF, close=close)
        except Exception:  # the call answers every error itself; this is a bug, so drop the connection
            log.exception("fast HTTP path failed")
            self.close()
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(out)
        if close or self._closing:
            transport.close()
            return
        self._busy = False
        self._task = None
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buf:
            self._next()

    def _hand_over(self) -> None:
        """Give this connection and what it sent so far to aiohttp, which owns it from now on."""
        transport = self._transport
        if transport is None:
            return
        self._conns.discard(self)
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        self._transport = None
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if data:
            handler.data_received(data)


def _lookup(headers: dict[str, tuple[str, ...]]) -> Callable[[str], tuple[str, ...]]:
    def getall(name: str) -> tuple[str, ...]:
        return headers.get(name.lower(), ())

    return getall


def _parse_head(buf: bytearray, end: int) -> tuple[tuple[str, str, str], dict[str, tuple[str, ...]], int, bool] | None:
    """((method, path, query), headers, content length, close) of a plain `POST /`; None: not ours."""
    head = bytes(buf[:end])
    if head.translate(None, _PLAIN):
        return None  # non-ASCII or control bytes (other than tabs and line ends): aiohttp judges
    text = head.decode("ascii")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        return None  # a bare CR or LF
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "POST" or parts[2] != "HTTP/1.1":
        return None
    path, _, query = parts[1].partition("?")
    if path != "/":
        return None
    headers: dict[str, tuple[str, ...]] = {}
    token = _TOKEN_STR.fullmatch
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or token(name) is None:
            return None  # not a token (spaces, folding, ...): aiohttp judges
        key = name.lower()
        if key in _FALLBACK_NAMES:
            return None
        v = value.strip(" \t")
        prev = headers.get(key)
        headers[key] = (v,) if prev is None else (*prev, v)
    lengths = headers.get("content-length")
    if lengths is None:
        length = 0
    elif len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 12:
        return None
    else:
        length = int(lengths[0])
    close = any(t.strip() == "close" for v in headers.get("connection", ()) for t in v.lower().split(","))
    return ("POST", "/", query), headers, length, close


class FastServer:
    """Protocol factory for `loop.create_server`: FastHttp in front of aiohttp's own factory."""

    def __init__(self, call: DynamoCall, aiohttp_server: Any, max_body: int, *, early: EarlyCall | None = None) -> None:
        self._call = call
        self._early = early
        self._aiohttp = aiohttp_server
        self._max_body = max_body
        self._conns: set[FastHttp] = set()

    def __call__(self) -> FastHttp:
        return FastHttp(self._call, self._aiohttp, self._max_body, self._conns, self._early)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aiohttp, name)  # everything the runner asks of aiohttp's Server

    def pre_shutdown(self) -> None:
        for conn in list(self._conns):
            conn.close_when_idle()
        self._aiohttp.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Let requests in progress answer (up to `timeout`), as aiohttp does for its own."""
        pending = [t for t in (c.in_progress for c in self._conns) if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        await self._aiohttp.shutdown(timeout)
