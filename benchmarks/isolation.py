"""Two tables on the same storage nodes: does hammering one move the other's latency?

One `kynamo local` (three storage-node processes, every partition on all three).
Table B (on demand) takes a steady, moderate load: GetItem and PutItem at a fixed
rate from this process (open loop: requests leave on schedule whether or not the
previous ones answered, so queueing shows in the latency). It is measured alone,
then again while table A (PROVISIONED, small: --a-wcu) is hammered by several raw
HTTP processes, each with many connections, as fast as they go.

Admission control is what keeps A's excess cheap: the router refuses it with
ProvisionedThroughputExceededException before it reaches storage. Prints B's
p50/p99 both ways and their ratio (the issue's bar: p99 within 20%), A's admitted
and throttled counts, and B's errors (there should be none).

    python benchmarks/isolation.py [--seconds 10] [--b-rate 100] [--hammers 3] [--a-wcu 50]

Numbers on a shared 2-core machine are noisy: the hammers, the router and the storage
nodes all share the same cores, so some of B's slowdown is plain CPU contention that
no admission control can remove (a real deployment runs routers and storage nodes on
separate machines). To show how much, B is also measured while the same hammers hit a
null server that answers every request with a throttle at once (their CPU cost, without
Kynamo doing any work for them). Run it a few times and read the ratios, not the
milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

AUTH = ("AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64)
HEADERS = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Date": "20240101T000000Z", "Authorization": AUTH}
B_KEYS = 500

# One hammer process: `conns` connections putting items into table A as fast as each answers.
HAMMER = r"""
import asyncio, json, sys, time
import aiohttp
endpoint, table, seconds, conns, tid = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
headers = json.loads(sys.argv[6])
async def main():
    counts = {"ok": 0, "throttled": 0, "other": 0}
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        async def worker(w):
            i = 0
            while time.monotonic() < stop:
                i += 1
                body = json.dumps({"TableName": table, "Item": {"pk": {"S": f"a{tid}-{w}-{i % 1000}"},
                                                                "v": {"S": "x" * 100}}})
                try:
                    async with s.post(endpoint, data=body, headers={**headers,
                                      "X-Amz-Target": "DynamoDB_20120810.PutItem"}) as r:
                        text = await r.text()
                        if r.status == 200:
                            counts["ok"] += 1
                        elif "ProvisionedThroughputExceeded" in text:
                            counts["throttled"] += 1
                        else:
                            counts["other"] += 1
                except aiohttp.ClientError:
                    counts["other"] += 1
        await asyncio.gather(*(worker(w) for w in range(conns)))
    print(json.dumps(counts), flush=True)
asyncio.run(main())
"""


# Answers every request at once with DynamoDB's throttle error: the hammers' own CPU cost, nothing else.
NULL_SERVER = r"""
import asyncio, sys
BODY = b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"x"}'
RESP = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: "
        + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i].lower()
            j = head.find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n", 1)[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            self.t.write(RESP)
async def main(port):
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", port, backlog=1024)
    await srv.serve_forever()
asyncio.run(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(endpoint: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(endpoint, data=json.dumps(body).encode(), method="POST",
                                 headers={**HEADERS, "X-Amz-Target": f"DynamoDB_20120810.{op}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def wait_up(endpoint: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kynamo local exited: {log.read_text(errors='replace')[-600:]}")
        try:
            call(endpoint, "ListTables", {})
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise RuntimeError("kynamo local did not come up")


def create(endpoint: str, name: str, wcu: int | None) -> None:
    body: dict[str, Any] = {"TableName": name, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]}
    if wcu:
        body["ProvisionedThroughput"] = {"ReadCapacityUnits": wcu, "WriteCapacityUnits": wcu}
    else:
        body["BillingMode"] = "PAY_PER_REQUEST"
    call(endpoint, "CreateTable", body)
    while call(endpoint, "DescribeTable", {"TableName": name})["Table"]["TableStatus"] != "ACTIVE":
        time.sleep(0.2)


async def steady_b(endpoint: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open-loop GetItem/PutItem on table B at `rate`/s; latencies in ms and error counts."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one(i: int) -> None:
            op = "PutItem" if i % 2 else "GetItem"
            key = {"pk": {"S": f"b{i % B_KEYS}"}}
            body = {"TableName": "TableB", "Item": {**key, "v": {"S": "y" * 100}}} if op == "PutItem" else \
                {"TableName": "TableB", "Key": key}
            t = time.perf_counter()
            try:
                async with s.post(endpoint, data=json.dumps(body),
                                  headers={**HEADERS, "X-Amz-Target": f"DynamoDB_20120810.{op}"}) as r:
                    text = await r.text()
                    if r.status != 200:
                        kind = json.loads(text).get("__type", str(r.status)).rsplit("#", 1)[-1]
                        errors[kind] = errors.get(kind, 0) + 1
                        return
            except (aiohttp.ClientError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            lat.append((time.perf_counter() - t) * 1000)

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"n": len(lat), "p50": pct(0.50), "p99": pct(0.99), "errors": errors}


def hammered(endpoint: str, target: str, args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """B measured against `endpoint` while the hammers hit `target`; (B's result, the hammers' counts)."""
    hammers = hammer(target, args.seconds + 2, args.hammers, args.conns, work)
    time.sleep(1.0)  # hammers connected and running
    result = asyncio.run(steady_b(endpoint, args.b_rate, args.seconds))
    counts = {"ok": 0, "throttled": 0, "other": 0}
    for h in hammers:
        out, _ = h.communicate(timeout=args.seconds + 60)
        for k, v in json.loads(out.strip().splitlines()[-1]).items():
            counts[k] += v
    return result, counts


def hammer(endpoint: str, seconds: float, procs: int, conns: int, work: Path) -> list[subprocess.Popen[str]]:
    script = work / "hammer.py"
    script.write_text(HAMMER)
    return [subprocess.Popen([sys.executable, str(script), endpoint, "TableA", str(seconds), str(conns), str(i),
                              json.dumps(HEADERS)], stdout=subprocess.PIPE, text=True) for i in range(procs)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="length of each measurement")
    ap.add_argument("--b-rate", type=float, default=100, help="table B's steady requests/s (half reads, half writes)")
    ap.add_argument("--hammers", type=int, default=3, help="processes hammering table A")
    ap.add_argument("--conns", type=int, default=16, help="connections per hammer process")
    ap.add_argument("--a-wcu", type=int, default=50, help="table A's provisioned WCU (and RCU)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kynamo-isolation-"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/"
    log = work / "kynamo.log"
    cmd = [sys.executable, "-m", "kynamo.cli", "local", "--data-dir", str(work / "data"), "--port", str(port),
           "--storage-base-port", str(22000 + os.getpid() % 5000), "--log-level", "warning"]
    env = {**os.environ, "PYTHONSAFEPATH": "1", "KYNAMO_BURST_SECONDS": "1"}  # A's limit shows at once
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    null_port = free_port()
    (work / "null.py").write_text(NULL_SERVER)
    null = subprocess.Popen([sys.executable, str(work / "null.py"), str(null_port)], start_new_session=True)
    try:
        wait_up(endpoint, proc, log)
        create(endpoint, "TableA", args.a_wcu)
        create(endpoint, "TableB", None)
        for i in range(B_KEYS):
            call(endpoint, "PutItem", {"TableName": "TableB", "Item": {"pk": {"S": f"b{i}"}, "v": {"S": "y" * 100}}})
        asyncio.run(steady_b(endpoint, args.b_rate, 2))  # warm-up
        alone = asyncio.run(steady_b(endpoint, args.b_rate, args.seconds))
        loaded, a = hammered(endpoint, endpoint, args, work)
        again = asyncio.run(steady_b(endpoint, args.b_rate, args.seconds))
        control, _ = hammered(endpoint, f"http://127.0.0.1:{null_port}/", args, work)
    finally:
        null.kill()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    print(f"\nkynamo local, table B at {args.b_rate:.0f} req/s (GetItem + PutItem, open loop), "
          f"{args.seconds:.0f} s each; table A ({args.a_wcu} WCU) hammered by {args.hammers} processes x "
          f"{args.conns} connections")
    print(f"{'B measured':<28}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}  errors")
    for label, r in (("alone", alone), ("while A is hammered", loaded), ("alone again", again),
                     ("hammers on a null server", control)):
        print(f"{label:<28}{r['n']:>9}{r['p50']:>9.2f}{r['p99']:>9.2f}  {r['errors'] or '-'}")
    base99 = (alone["p99"] + again["p99"]) / 2
    base50 = (alone["p50"] + again["p50"]) / 2
    print(f"B p99 ratio hammered/alone: {loaded['p99'] / base99:.2f}  (p50 {loaded['p50'] / base50:.2f}); "
          "the issue's bar is 1.20")
    print(f"B p99 ratio hammered/hammers-on-a-null-server (the part Kynamo adds beyond the hammers' own CPU): "
          f"{loaded['p99'] / control['p99']:.2f}  (p50 {loaded['p50'] / control['p50']:.2f})")
    total = sum(a.values()) / args.seconds
    print(f"A: {a['ok']} admitted ({a['ok'] / (args.seconds + 2):.0f}/s against {args.a_wcu} WCU + 1 s burst), "
          f"{a['throttled']} throttled, {a['other']} other errors; {total:.0f} requests/s offered")
    print(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
