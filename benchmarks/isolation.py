"""Two tables on the same storage nodes: does hammering one move the other's latency?

One `kynamo local` (three storage-node processes, every partition on all three).
Table B (on demand) takes a steady, moderate load: GetItem and PutItem at a fixed
rate from this process (open loop: requests leave on schedule whether or not the
previous ones answered, so queueing shows in the latency). B is measured:

1. alone (rounds of 1 and 2 are interleaved, --rounds, and pooled, so a change in
   the machine's other load hits both sides);
2. **the issue's bar**: while table A (PROVISIONED, --a-wcu WCU) is offered a fixed
   rate far above its capacity (--a-rate, default 20x its WCU: 1,000 PutItem/s
   against 50 WCU, the shape of the issue's "1,000 writes/s against 100 WCU"),
   open loop from --open-procs processes: requests leave on schedule whatever the
   answers, as independent clients do, so the load is the same whatever Kynamo does
   (raw HTTP on a few keep-alive connections, pipelined when answers lag: the
   cheapest sender Python has, since its CPU is taken from B on a small machine).
   A's generators run at --client-nice (10): they stand in for clients on other
   machines, so the scheduler gives their CPU to Kynamo and B first; the output
   reports how far behind schedule their sends fell, so a starved generator shows;
3. alone once more (the baseline pools every alone round);
4. the same open-loop offer sent to a null server (the generator's own CPU, and the
   null server's CPU per 1,000 answers: the floor for any Python server);
5. while A is flooded closed loop (--hammers processes x --conns connections, each
   sending its next request as soon as the last one answers: as many requests as the
   router can refuse, which measures the router's refusal cost, not isolation);
6. while the same closed-loop flood hits a null server (its own CPU: on a 2-core
   machine it starves everything, Kynamo or not).

Admission control keeps A's excess cheap: the router refuses it with
ProvisionedThroughputExceededException before it reaches storage. For each phase
with A loaded, prints A's admitted / throttled / other counts and the router
process's CPU per 1,000 refused requests (utime + stime from /proc, before and
after); for B, p50/p99 and errors (there should be none).

    python benchmarks/isolation.py [--seconds 10] [--b-rate 100] [--a-wcu 50] [--a-rate 1000]
                                   [--open-procs 2] [--rounds 2] [--hammers 3] [--conns 16] [--no-flood]

Numbers on a shared 2-core machine are noisy: load generators, router and storage
nodes share the same cores (a real deployment runs clients, routers and storage
nodes on separate machines). Run it a few times and read the ratios, not the
milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nullserver
from nullserver import free_port

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


# One open-loop process: PutItems into table A at a fixed rate, each leaving on schedule whatever the answers.
# Raw HTTP/1.1 over a few keep-alive connections (requests pipelined when answers lag), on uvloop: an
# aiohttp client costs several times the CPU per request, and on a 2-core box that CPU is taken from B.
OPEN_HAMMER = r"""
import asyncio, json, sys, time
endpoint, table, seconds, rate, tid = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
headers = {**json.loads(sys.argv[6]), "X-Amz-Target": "DynamoDB_20120810.PutItem"}
host, port = endpoint.split("//", 1)[1].rstrip("/").rsplit(":", 1)
CONNS = 4
def request(i):
    body = json.dumps({"TableName": table, "Item": {"pk": {"S": f"a{tid}-{i}"}, "v": {"S": "x" * 100}}}).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {len(body)}\r\n\r\n").encode() + body
REQUESTS = [request(i) for i in range(1000)]
counts = {"ok": 0, "throttled": 0, "other": 0}
class Conn(asyncio.Protocol):
    def __init__(self):
        self.buf, self.waiting, self.done = b"", 0, None
    def connection_made(self, t):
        self.t = t
    def data_received(self, data):
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.buf[:i]
            j = head.lower().find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n", 1)[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n:
                return
            body, self.buf = self.buf[i + 4:i + 4 + n], self.buf[i + 4 + n:]
            self.waiting -= 1
            if head.startswith(b"HTTP/1.1 200"):
                counts["ok"] += 1
            elif b"ProvisionedThroughputExceeded" in body:
                counts["throttled"] += 1
            else:
                counts["other"] += 1
            if self.waiting == 0 and self.done is not None and not self.done.done():
                self.done.set_result(None)
    def connection_lost(self, exc):
        counts["other"] += self.waiting
        self.waiting = 0
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
async def main():
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Conn, host, int(port)))[1] for _ in range(CONNS)]
    n = int(rate * seconds)
    start = time.perf_counter()
    worst = 0.0
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            worst = max(worst, -delay)
        c = min(conns, key=lambda c: c.waiting)  # the least backed-up connection
        c.waiting += 1
        c.t.write(REQUESTS[i % 1000])
    sent_in = time.perf_counter() - start
    for c in conns:
        if c.waiting:
            c.done = loop.create_future()
            await asyncio.wait_for(c.done, 60)
        c.t.close()
    print(json.dumps({**counts, "sent": n, "send_rate": n / sent_in, "late_ms": worst * 1000}), flush=True)
try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


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
    by_op: dict[str, list[float]] = {"GetItem": [], "PutItem": []}
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
            by_op[op].append(lat[-1])

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return summary(lat, errors, by_op)


def pct(lat: list[float], p: float) -> float:
    """The p-quantile of sorted latencies."""
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")


def summary(lat: list[float], errors: dict[str, int], by_op: dict[str, list[float]]) -> dict[str, Any]:
    """p50/p99 of latencies in ms (also per operation), with the samples kept so rounds can be pooled."""
    lat = sorted(lat)
    ops = {op: sorted(v) for op, v in by_op.items()}
    return {"n": len(lat), "p50": pct(lat, 0.50), "p99": pct(lat, 0.99), "errors": errors, "lat": lat,
            "by_op": ops, "p99_op": {op: pct(v, 0.99) for op, v in ops.items()}}


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ops = {op: [x for r in results for x in r["by_op"][op]] for op in results[0]["by_op"]}
    return summary([x for r in results for x in r["lat"]], errors, ops)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded(endpoint: str, target: str, args: argparse.Namespace, work: Path, *, open_loop: bool,
           router_pid: int) -> dict[str, Any]:  # router_pid: the process whose CPU is measured
    """B measured against `endpoint` while A's load hits `target`: B's result, A's counts, router CPU."""
    seconds = args.seconds + 2
    if open_loop:
        script, extra = work / "open_hammer.py", [str(args.a_rate / args.open_procs)]
        (work / "open_hammer.py").write_text(OPEN_HAMMER)
        procs = args.open_procs
    else:
        script, extra = work / "hammer.py", [str(args.conns)]
        (work / "hammer.py").write_text(HAMMER)
        procs = args.hammers
    cpu0, wall0 = cpu_seconds(router_pid), time.monotonic()
    nice = args.client_nice
    hammers = [subprocess.Popen([sys.executable, str(script), target, "TableA", str(seconds), *extra, str(i),
                                 json.dumps(HEADERS)], stdout=subprocess.PIPE, text=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None) for i in range(procs)]
    time.sleep(1.0)  # hammers connected and running
    result = asyncio.run(steady_b(endpoint, args.b_rate, args.seconds))
    a: dict[str, float] = {"ok": 0, "throttled": 0, "other": 0}
    for h in hammers:
        out, _ = h.communicate(timeout=seconds + 60)
        for k, v in json.loads(out.strip().splitlines()[-1]).items():
            if k == "late_ms":
                a[k] = max(a.get(k, 0.0), v)
            else:
                a[k] = a.get(k, 0) + v
    result["a"] = a
    result["a_seconds"] = seconds
    result["router_cpu"] = cpu_seconds(router_pid) - cpu0
    result["wall"] = time.monotonic() - wall0
    return result


def alone_phase(endpoint: str, args: argparse.Namespace, router_pid: int) -> dict[str, Any]:
    """B alone, with the router's CPU over the phase (B's own cost, to subtract from the loaded phases)."""
    cpu0, wall0 = cpu_seconds(router_pid), time.monotonic()
    result = asyncio.run(steady_b(endpoint, args.b_rate, args.seconds))
    result["router_cpu"] = cpu_seconds(router_pid) - cpu0
    result["wall"] = time.monotonic() - wall0
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="length of each measurement of B")
    ap.add_argument("--b-rate", type=float, default=100, help="table B's steady requests/s (half reads, half writes)")
    ap.add_argument("--a-wcu", type=int, default=50, help="table A's provisioned WCU (and RCU)")
    ap.add_argument("--a-rate", type=float, default=0,
                    help="requests/s offered to table A open loop (default: 20x --a-wcu)")
    ap.add_argument("--open-procs", type=int, default=2, help="processes sending A's open-loop offer")
    ap.add_argument("--hammers", type=int, default=3, help="processes flooding table A closed loop")
    ap.add_argument("--conns", type=int, default=16, help="connections per closed-loop flood process")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alone / A-offered rounds, interleaved and pooled (then one more alone)")
    ap.add_argument("--no-flood", action="store_true", help="skip the closed-loop flood and its null-server control")
    ap.add_argument("--client-nice", type=int, default=10,
                    help="niceness of A's load generators (0: none). They stand in for clients on other machines; "
                         "on a 2-core box their own CPU would otherwise be taken from B and Kynamo alike")
    args = ap.parse_args()
    args.a_rate = args.a_rate or 20.0 * args.a_wcu

    work = Path(tempfile.mkdtemp(prefix="kynamo-isolation-"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/"
    null_target = ""
    log = work / "kynamo.log"
    cmd = [sys.executable, "-m", "kynamo.cli", "local", "--data-dir", str(work / "data"), "--port", str(port),
           "--storage-base-port", str(22000 + os.getpid() % 5000), "--log-level", "warning"]
    env = {**os.environ, "PYTHONSAFEPATH": "1", "KYNAMO_BURST_SECONDS": "1"}  # A's limit shows at once
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    null_port = free_port()
    # Answers every request at once with DynamoDB's throttle error: the senders' own CPU cost, nothing else.
    null = subprocess.Popen(nullserver.command(work, null_port, nullserver.THROTTLED), start_new_session=True)
    null_target = f"http://127.0.0.1:{null_port}/"
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        wait_up(endpoint, proc, log)
        create(endpoint, "TableA", args.a_wcu)
        create(endpoint, "TableB", None)
        for i in range(B_KEYS):
            call(endpoint, "PutItem", {"TableName": "TableB", "Item": {"pk": {"S": f"b{i}"}, "v": {"S": "y" * 100}}})
        asyncio.run(steady_b(endpoint, args.b_rate, 2))  # warm-up
        for i in range(args.rounds):  # interleaved, so a change in the machine's other load hits both
            rows.append((f"alone #{i + 1}", alone_phase(endpoint, args, proc.pid)))
            rows.append((f"A offered open loop #{i + 1}", loaded(endpoint, endpoint, args, work, open_loop=True,
                                                                 router_pid=proc.pid)))
        rows.append((f"alone #{args.rounds + 1}", alone_phase(endpoint, args, proc.pid)))
        rows.append(("open loop on a null server", loaded(endpoint, null_target, args, work, open_loop=True,
                                                          router_pid=null.pid)))
        if not args.no_flood:
            rows.append(("A flooded closed loop", loaded(endpoint, endpoint, args, work, open_loop=False,
                                                         router_pid=proc.pid)))
            rows.append(("flood on a null server", loaded(endpoint, null_target, args, work, open_loop=False,
                                                          router_pid=null.pid)))
    finally:
        null.kill()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    r = dict(rows)
    print(f"\nkynamo local, table B at {args.b_rate:.0f} req/s (GetItem + PutItem, open loop), {args.seconds:.0f} s "
          f"each; table A ({args.a_wcu} WCU, 1 s burst) offered {args.a_rate:.0f} PutItem/s open loop from "
          f"{args.open_procs} processes (nice {args.client_nice}), or flooded closed loop by {args.hammers} "
          f"processes x {args.conns} connections;"
          " null-server rows: its CPU (the floor of a minimal Python server)")
    print(f"{'B measured':<28}{'requests':>9}{'p50 ms':>8}{'p99 ms':>8}  {'B errors':<9}"
          f"{'A sent/s':>9}{'admitted':>9}{'throttled':>10}{'other':>6}{'CPU':>6}{'ms/1k refused':>14}")
    for label, res in rows:
        line = f"{label:<28}{res['n']:>9}{res['p50']:>8.2f}{res['p99']:>8.2f}  {res['errors'] or '-'!s:<9}"
        a = res.get("a")
        busy = f"{res['router_cpu'] / res['wall'] * 100:.0f}%"
        if a:
            sent = a.get("send_rate") or sum(a[k] for k in ("ok", "throttled", "other")) / res["a_seconds"]
            refused = a["throttled"]
            per_k = f"{res['router_cpu'] / refused * 1e6:.1f}" if refused else "-"
            line += (f"{sent:>9.0f}{int(a['ok']):>9}{int(a['throttled']):>10}{int(a['other']):>6}"
                     f"{busy:>6}{per_k:>14}")
        else:
            line += f"{'':>43}{busy:>6}"
        print(line)
    alone = pooled([res for label, res in rows if label.startswith("alone")])
    base99, base50 = alone["p99"], alone["p50"]
    opens = [res for label, res in rows if label.startswith("A offered open loop")]
    ol = pooled(opens)
    ol["a"] = {k: sum(o["a"].get(k, 0) for o in opens) for k in ("ok", "throttled", "other")}
    ol["a"]["late_ms"] = max(o["a"].get("late_ms", 0) for o in opens)
    ol["a_seconds"] = sum(o["a_seconds"] for o in opens)
    print(f"THE BAR: B p99 with A offered {args.a_rate:.0f}/s ({args.a_rate / args.a_wcu:.0f}x its WCU) / alone, "
          f"pooled over {args.rounds} rounds: {ol['p99'] / base99:.2f}  (p50 {ol['p50'] / base50:.2f}; "
          f"p99 {ol['p99']:.2f} vs {base99:.2f} ms); the issue's bar is 1.20")
    print("  per operation, B p99 with A offered / alone: " + ", ".join(
        f"{op} {ol['p99_op'][op] / alone['p99_op'][op]:.2f} ({ol['p99_op'][op]:.2f} vs {alone['p99_op'][op]:.2f} ms)"
        for op in ol["p99_op"]) + " (PutItem waits on three fsyncs on a disk shared with the rest of the machine)")
    ctl = r["open loop on a null server"]
    print(f"  same offer to a null server / alone (the generator's own CPU): {ctl['p99'] / base99:.2f}  "
          f"(p50 {ctl['p50'] / base50:.2f})")
    alones = [res for label, res in rows if label.startswith("alone")]
    b_cpu = sum(x["router_cpu"] for x in alones) / sum(x["wall"] for x in alones)  # router CPU/s for B alone
    added = sum(o["router_cpu"] for o in opens) - b_cpu * sum(o["wall"] for o in opens)
    print(f"  A admitted {ol['a']['ok'] / ol['a_seconds']:.0f}/s against {args.a_wcu} WCU + 1 s burst; "
          f"latest send {ol['a'].get('late_ms', 0):.1f} ms behind schedule; router CPU A's offer added: "
          f"{added / sum(o['wall'] for o in opens) * 100:.1f}% of a core, "
          f"{added / max(1, ol['a']['throttled']) * 1e6:.1f} ms per 1,000 refused (its {ol['a']['ok']} admitted "
          f"writes included)")
    if not args.no_flood:
        fl, fc = r["A flooded closed loop"], r["flood on a null server"]
        print(f"closed-loop flood (router refusal cost, not the bar): B p99 / alone {fl['p99'] / base99:.2f}; "
              f"flood on a null server / alone {fc['p99'] / base99:.2f}; "
              f"{fl['a']['throttled'] / fl['a_seconds']:.0f} refusals/s at "
              f"{fl['router_cpu'] / max(1, fl['a']['throttled']) * 1e6:.1f} router CPU ms per 1,000 "
              f"(a minimal Python server: {fc['router_cpu'] / max(1, fc['a']['throttled']) * 1e6:.1f})")
    print("CPU: the router's (or null server's) utime + stime over the phase, B's and A's admitted work "
          "included; ms/1k refused divides it all by A's refusals, exact only when refusals dominate (the flood)")
    print(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
