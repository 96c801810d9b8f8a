"""The router's lean HTTP front (router/fasthttp.py) over raw sockets, against a real `kynamo local`.

SDK-shaped requests (`POST /`, Content-Length, keep-alive) are answered by the fast path;
any other shape hands the connection to aiohttp, which must then answer it exactly as before.
aiohttp's answers carry its `Server` header and the fast path's do not, which is how these
tests tell who answered.
"""

from __future__ import annotations

import json
import socket
import time
import zlib
from typing import Any

import pytest
from router_env import TARGET, LocalKynamo, ddb, kynamo, make_table  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    name = make_table(ddb, "fast")
    ddb.put_item(TableName=name, Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"S": "x"}})
    return name


def request(op: str, body: dict[str, Any], *, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.0\r\n"
            f"X-Amz-Target: {TARGET}{op}\r\nContent-Length: {len(data)}\r\n{extra}\r\n").encode() + data


def get_item(table: str) -> bytes:
    return request("GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                               "ConsistentRead": True})


class Conn:
    """One client connection reading whole HTTP/1.1 responses (Content-Length framed)."""

    def __init__(self, kynamo: LocalKynamo) -> None:  # noqa: F811
        self.sock = socket.create_connection(("127.0.0.1", kynamo.port), timeout=20)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _item_ok(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 200, body
    assert json.loads(body)["Item"]["v"] == {"S": "x"}
    assert int(headers["x-amz-crc32"]) == zlib.crc32(body) & 0xFFFFFFFF
    assert len(headers["x-amzn-requestid"]) == 32


def test_keep_alive_requests_take_the_fast_path(kynamo: LocalKynamo, table: str) -> None:  # noqa: F811
    c = Conn(kynamo)
    try:
        ids = set()
        for _ in range(3):
            c.send(get_item(table))
            status, headers, body = c.response()
            _item_ok(status, headers, body)
            assert "server" not in headers  # not aiohttp
            assert headers["content-type"] == "application/x-amz-json-1.0"
            assert "date" in headers
            ids.add(headers["x-amzn-requestid"])
        assert len(ids) == 3
    finally:
        c.close()


def test_pipelined_and_split_requests_answer_in_order(kynamo: LocalKynamo, table: str) -> None:  # noqa: F811
    c = Conn(kynamo)
    try:
        missing = request("GetItem", {"TableName": "no_such_table", "Key": {"pk": {"S": "a"}}})
        c.send(get_item(table) + missing + get_item(table))  # three requests in one segment
        _item_ok(*c.response())
        status, _, body = c.response()
        assert status == 400 and json.loads(body)["__type"].endswith("#ResourceNotFoundException")
        _item_ok(*c.response())
        raw = get_item(table)
        for piece in (raw[:10], raw[10:-7], raw[-7:]):  # head and body arrive in pieces
            c.send(piece)
            time.sleep(0.05)
        _item_ok(*c.response())
    finally:
        c.close()


def test_other_shapes_go_to_aiohttp_on_the_same_connection(kynamo: LocalKynamo, table: str) -> None:  # noqa: F811
    c = Conn(kynamo)
    try:
        c.send(get_item(table))
        status, headers, body = c.response()
        _item_ok(status, headers, body)
        assert "server" not in headers
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # health check: aiohttp's route
        status, headers, body = c.response()
        assert status == 200 and body.startswith(b"healthy") and "aiohttp" in headers["server"]
        c.send(get_item(table))  # the connection now belongs to aiohttp, which still serves the API
        status, headers, body = c.response()
        _item_ok(status, headers, body)
        assert "aiohttp" in headers["server"]
    finally:
        c.close()


def test_chunked_body_is_answered_by_aiohttp(kynamo: LocalKynamo, table: str) -> None:  # noqa: F811
    body = json.dumps({"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}, "ConsistentRead": True})
    chunked = f"{len(body):x}\r\n{body}\r\n0\r\n\r\n".encode()
    c = Conn(kynamo)
    try:
        c.send(f"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {TARGET}GetItem\r\n"
               "Transfer-Encoding: chunked\r\n\r\n".encode() + chunked)
        status, headers, payload = c.response()
        _item_ok(status, headers, payload)
        assert "aiohttp" in headers["server"]
    finally:
        c.close()


def test_connection_close_is_honoured(kynamo: LocalKynamo, table: str) -> None:  # noqa: F811
    c = Conn(kynamo)
    try:
        c.send(request("GetItem", {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                                   "ConsistentRead": True}, extra="Connection: keep-alive, Close\r\n"))
        status, headers, body = c.response()
        _item_ok(status, headers, body)
        assert headers.get("connection", "").lower() == "close"
        assert c.closed()
    finally:
        c.close()


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    b"POST / HTTP/1.1\r\nBad Header: 1\r\nContent-Length: 2\r\n\r\n{}",
    b"POST / HTTP/1.1\r\n folded: 1\r\nContent-Length: 2\r\n\r\n{}",
    b"NOTAMETHOD\r\n\r\n",
])
def test_malformed_http_gets_aiohttps_answer(kynamo: LocalKynamo, raw: bytes) -> None:  # noqa: F811
    c = Conn(kynamo)
    try:
        c.send(raw)
        status, headers, _ = c.response()
        assert status == 400
        assert "aiohttp" in headers.get("server", "")  # aiohttp judged it, not the fast path
    finally:
        c.close()
    c = Conn(kynamo)  # and the server is still fine
    try:
        c.send(request("ListTables", {}))
        status, _, body = c.response()
        assert status == 200 and "fast" in json.loads(body)["TableNames"]
    finally:
        c.close()
