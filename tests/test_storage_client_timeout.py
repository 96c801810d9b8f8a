"""GroupClient's per-call `timeout`: a storage node that accepts and never answers (a gray failure).

The router relies on it (instead of asyncio.timeout per request) to answer 503 in time.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from kynamo.storage_client import GroupClient


async def _silent_server() -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A real listener that reads requests and never replies."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_write_and_read_time_out_and_queued_callers_too() -> None:
    async def run() -> None:
        server, port, seen = await _silent_server()
        try:
            async with aiohttp.ClientSession() as session:
                client = GroupClient(session, "p", [f"127.0.0.1:{port}:1"], deadline=30)
                cmd = {"op": "put", "key": {"pk": {"S": "a"}}, "item": {"pk": {"S": "a"}}}
                started = time.monotonic()
                results = await asyncio.gather(
                    *(client.write(cmd, timeout=0.3) for _ in range(12)),  # one in flight, the rest queued
                    client.read({"pk": {"S": "a"}}, consistent=True, timeout=0.3),
                    client.read({"pk": {"S": "a"}}, consistent=False, timeout=0.3),
                    return_exceptions=True)
                took = time.monotonic() - started
                assert all(isinstance(r, TimeoutError) for r in results), results
                assert took < 2.0, took  # each caller gave up at its own deadline, not the client's 30 s
                assert seen  # the requests really went out
                # Without a timeout the call is still waiting (bounded only by the client's deadline).
                waiting = asyncio.ensure_future(client.write(cmd))
                await asyncio.sleep(0.5)
                assert not waiting.done()
                waiting.cancel()
        finally:
            server.close()

    asyncio.run(run())
