"""Replicated write throughput and latency of one 3-replica group, on loopback.

Drives the leader of a 3-replica partition (three real `kynamo storage-node`
processes) with `wrk` posting 1 KB puts at concurrency 1 and 64, and measures
in the same run the durability floor: a single-process loop of synchronous
(fsynced) RocksDB puts of the same size on the same disk. Prints writes/s,
p50/p99 and the ratio between them.

    python benchmarks/replication.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from storage_cluster import Cluster
from wrkreport import DONE_LUA, parse_result

WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
local function str(s)
  local n = #s
  if n < 32 then return string.char(0xa0 + n) .. s end
  if n < 256 then return string.char(0xd9, n) .. s end
  return string.char(0xda, math.floor(n / 256), n % 256) .. s
end
local value = string.rep("v", 1000)
function request()
  counter = counter + 1
  local key = "k" .. tid .. "-" .. counter
  local pk = string.char(0x81) .. str("pk") .. string.char(0x81) .. str("S") .. str(key)
  local item = string.char(0x82) .. str("pk") .. string.char(0x81) .. str("S") .. str(key)
    .. str("v") .. string.char(0x81) .. str("S") .. str(value)
  local cmd = string.char(0x83) .. str("op") .. str("put") .. str("key") .. pk .. str("item") .. item
  local body = string.char(0x81) .. str("cmd") .. cmd
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-msgpack"}, body)
end
""" + DONE_LUA


def rocksdb_floor(directory: Path, seconds: float) -> dict[str, float]:
    """Synchronous RocksDB puts of 1 KB: what one fsync per write costs on this disk."""
    from rocksdict import Options, Rdict, WriteOptions

    db = Rdict(str(directory), Options(raw_mode=True))
    wo = WriteOptions()
    wo.sync = True
    value = b"v" * 1000
    lat: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        db.put(f"k{i}".encode(), value, wo)
        lat.append(time.perf_counter() - t0)
        i += 1
    db.close()
    lat.sort()
    total = sum(lat)
    return {
        "writes_per_s": len(lat) / total,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    doc = parse_result(out)
    return {
        "writes_per_s": doc["ops"],
        "p50_ms": doc["p50_us"] / 1000,
        "p99_ms": doc["p99_us"] / 1000,
        "errors": doc["errors"],
    }


def replica_creation(cluster: Cluster, count: int) -> list[float]:
    """Seconds from the first PUT of a new 3-replica group on running processes to its first leader."""
    took = []
    for i in range(count):
        t0 = time.perf_counter()
        cluster.create_partition(f"new-{i}", cluster.nodes)
        cluster.leader(f"new-{i}", timeout=10)
        took.append(time.perf_counter() - t0)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="kynamo-bench-"))
    cluster = Cluster(root, 3)
    try:
        cluster.start()
        cluster.create_partition("bench", cluster.nodes)
        leader = cluster.leader("bench")
        script = root / "put.lua"
        script.write_text(WRK_SCRIPT)
        url = f"http://{leader.api}/v1/p/bench/write"
        run_wrk(url, 8, 2, script)  # warm-up
        results = {c: run_wrk(url, c, args.seconds, script) for c in (1, 64)}
        floor = rocksdb_floor(root / "floor", args.seconds)
        creation = replica_creation(cluster, 10)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; 3 replicas on loopback; 1 KB values; {args.seconds:.0f}s per row")
    print(f"{'what':42} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    print(f"{'RocksDB sync put, 1 process (floor)':42} {floor['writes_per_s']:>10.0f} "
          f"{floor['p50_ms']:>8.3f} {floor['p99_ms']:>8.3f} {'-':>7}")
    for c, r in results.items():
        print(f"{f'kynamo 3-replica group, concurrency {c}':42} {r['writes_per_s']:>10.0f} "
              f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['errors']:>7.0f}")
    creation.sort()
    print(f"new 3-replica group on running processes until it has a leader: "
          f"median {statistics.median(creation) * 1000:.0f} ms, max {creation[-1] * 1000:.0f} ms (10 groups)")
    for c, r in results.items():
        print(f"ratio kynamo c={c} / RocksDB sync floor: {r['writes_per_s'] / floor['writes_per_s']:.2f}x writes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
