"""`kynamo local`: the whole database on one machine, no Kubernetes.

Today it supervises the storage tier: one storage-node process per simulated
zone (three by default), restarted if one dies. The router (DynamoDB API on
--port) and the local control plane are the next deliveries; until they land,
partitions are created through the storage nodes' admin API (see README).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "run Kynamo on this machine: storage nodes per simulated zone (router: not built yet)"
DESCRIPTION = __doc__ or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--data-dir", default="./kynamo-data", help="where every process keeps its data")
    add_flag(p, "--zones", default=3, type=int, help="storage-node processes, one per simulated zone")
    add_flag(p, "--storage-base-port", default=7100, type=int,
             help="first storage-node port; node i uses base+2i (HTTP) and base+2i+1 (peer)")
    add_flag(p, "--host", default="127.0.0.1", help="address every process listens on")
    add_log_flags(p)


def node_command(args: argparse.Namespace, zone: int) -> list[str]:
    port = args.storage_base_port + 2 * zone
    return [
        sys.executable, "-m", "kynamo.cli", "storage-node",
        "--data-dir", str(Path(args.data_dir) / f"zone-{zone}"),
        "--host", args.host,
        "--port", str(port),
        "--peer-port", str(port + 1),
        "--log-level", args.log_level,
        "--log-format", args.log_format,
    ]


def run(args: argparse.Namespace) -> int:
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env = dict(os.environ)
    for zone in range(args.zones):
        procs[zone] = subprocess.Popen(node_command(args, zone), env=env)
    print(f"kynamo local: {args.zones} storage nodes under {args.data_dir}", flush=True)
    for zone in range(args.zones):
        port = args.storage_base_port + 2 * zone
        print(f"  zone-{zone}: http://{args.host}:{port}  member {args.host}:{port}:{port + 1}", flush=True)
    print("  router (DynamoDB API): not built yet; see README 'Status'", flush=True)
    while not stopping:
        time.sleep(0.5)
        for zone, proc in procs.items():
            if proc.poll() is not None and not stopping:
                print(f"kynamo local: zone-{zone} exited ({proc.returncode}); restarting", flush=True)
                procs[zone] = subprocess.Popen(node_command(args, zone), env=env)
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
