"""The floor every benchmark prints: a minimal server answering each request with one fixed response.

Run as its own process(es) (`command()`): keep-alive HTTP/1.1, pipelined requests answered in
one write, TCP_NODELAY, SO_REUSEPORT so several processes can share a port. What a load
generator reaches against it is the generator's own ceiling; its CPU per request is what any
Python server pays before doing any work.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

SCRIPT = r"""
import asyncio, socket, sys, zlib
port, status, body = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
RESP = (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nx-amz-crc32: " + str(zlib.crc32(body)).encode() + b"\r\n\r\n" + body)
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: break
            head = self.buf[:i].lower()
            j = head.find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n", 1)[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: break
            self.buf = self.buf[i + 4 + n:]
            out.append(RESP)
        if out: self.t.write(b"".join(out))
async def main():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.bind(("127.0.0.1", port))
    srv = await asyncio.get_running_loop().create_server(P, sock=s, backlog=1024)
    await srv.serve_forever()
asyncio.run(main())
"""

OK = ("200 OK", "{}")
THROTTLED = ("400 Bad Request",
             '{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"x"}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(work: Path, port: int, answer: tuple[str, str] = OK) -> list[str]:
    """The argv of one null-server process on `port` answering `answer` (status line, JSON body)."""
    script = work / "null_server.py"
    if not script.exists():
        script.write_text(SCRIPT)
    return [sys.executable, str(script), str(port), *answer]
