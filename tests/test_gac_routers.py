"""Two real `kynamo router` processes share one 100 WCU table through the GAC of a `kynamo local`.

A paced load of ~1,000 writes/s through both routers admits ~100/s in total
(within 10%) once the burst is drained; the rest is refused with
ProvisionedThroughputExceededException, which boto3 with retries off reports as
such. The burst is shortened (--burst-seconds 2) so the default run takes ~20 s;
the soak variant measures 30 s x KYNAMO_SOAK_SCALE (at least 8 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.router_env import LocalKynamo, free_port_block, make_table, start_router

BURST = 2.0
WCU = 100
RATE = 1000  # offered writes/s, split over both routers
TARGET = "DynamoDB_20120810.PutItem"


def _start_router(local: LocalKynamo, port: int, log: Path) -> subprocess.Popen[bytes]:
    token = {"KYNAMO_CLIENT_TOKEN": local.tokens()["client"]}  # its storage nodes require it
    return start_router(port, log, "--control-url", local.endpoint, "--gac-url", local.endpoint,
                        "--burst-seconds", str(BURST), "--log-level", "warning", env=token)


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKynamo, list[str]]]:
    base = tmp_path_factory.mktemp("gac")
    local = LocalKynamo(base / "data", extra_env={"KYNAMO_BURST_SECONDS": str(BURST)})
    local.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port_block(2)
        procs = [_start_router(local, port + i, base / f"router{i}.log") for i in range(2)]
        yield local, [f"http://127.0.0.1:{port + i}" for i in range(2)]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        local.stop()


async def _load(endpoints: list[str], table: str, seconds: float, rate: float) -> list[tuple[float, int]]:
    """Paced PutItems spread evenly over the routers: (start time, HTTP status) for each."""
    out: list[tuple[float, int]] = []
    sem = asyncio.Semaphore(128)
    n = 0

    async def one(session: aiohttp.ClientSession, url: str, i: int) -> None:
        body = json.dumps({"TableName": table, "Item": {"pk": {"S": f"k{i}"}, "v": {"S": "x" * 100}}})
        started = time.monotonic()
        async with sem:
            try:
                async with session.post(url, data=body, headers={"X-Amz-Target": TARGET}) as resp:
                    await resp.read()
                    out.append((started, resp.status))
            except aiohttp.ClientError:
                out.append((started, 599))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        start = time.monotonic()
        tasks = []
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while n < due:
                tasks.append(asyncio.create_task(one(session, endpoints[n % len(endpoints)] + "/", n)))
                n += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return out


def _measure(routers: tuple[LocalKynamo, list[str]], table: str, window: float) -> None:
    local, endpoints = routers
    make_table(local.client(), table, sk=None, wcu=WCU)
    time.sleep(1.0)  # both routers have polled the new table's metadata
    drain = BURST + 2.0
    # boto3 with retries off, alongside the load, sees the DynamoDB error for what is over capacity.
    ddb = boto3.client("dynamodb", endpoint_url=endpoints[0], region_name="us-east-1", aws_access_key_id="x",
                       aws_secret_access_key="x", config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    codes: dict[str, int] = {}

    def boto_client() -> None:
        for i in range(300):
            try:
                ddb.put_item(TableName=table, Item={"pk": {"S": f"b{i}"}})
                code = "ok"
            except ClientError as err:
                code = str(err.response["Error"]["Code"])
            codes[code] = codes.get(code, 0) + 1

    thread = threading.Thread(target=boto_client)
    thread.start()
    results = asyncio.run(_load(endpoints, table, drain + window, RATE))
    thread.join()
    t0 = min(t for t, _ in results) + drain
    measured = [s for t, s in results if t0 <= t < t0 + window]
    admitted = sum(1 for s in measured if s == 200)
    throttled = sum(1 for s in measured if s == 400)
    expected = WCU * window
    assert abs(admitted - expected) <= 0.1 * expected, (admitted, throttled, expected)
    assert throttled > 5 * admitted  # ~900/s offered over capacity
    assert len(measured) >= 0.8 * RATE * window  # the generator really offered ~1,000/s
    assert codes.get("ProvisionedThroughputExceededException", 0) > 0, codes


def test_two_routers_admit_the_table_rate_in_total(routers: tuple[LocalKynamo, list[str]]) -> None:
    _measure(routers, "shared", 8.0)
    # Idle, then a burst: the unused capacity (BURST seconds of it) is admitted at once.
    endpoints = routers[1]
    time.sleep(BURST + 1.0)
    started = time.monotonic()
    results = asyncio.run(_load(endpoints, "shared", 0.4, 2000))
    elapsed = time.monotonic() - started  # over 0.4 s when the machine is busy: the rate accrues meanwhile
    admitted = sum(1 for _, s in results if s == 200)
    assert WCU * BURST * 0.9 <= admitted <= WCU * (BURST + elapsed) * 1.1 + 20, (admitted, elapsed)


@pytest.mark.soak
def test_two_routers_soak(routers: tuple[LocalKynamo, list[str]]) -> None:
    scale = float(os.environ.get("KYNAMO_SOAK_SCALE", "1"))
    _measure(routers, "shared_soak", max(8.0, 30.0 * scale))


