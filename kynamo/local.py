"""`kynamo local`: the whole database on one machine, no Kubernetes.

Starts one storage-node process per simulated zone (three by default; restarted
if one dies), waits until they are healthy, then serves the DynamoDB API on
--port from this process with the local control plane: CreateTable places each
partition's three replicas one per zone. Table metadata and every replica's
WAL and RocksDB live under --data-dir, so a restart brings every table back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from kynamo.config import add_flag
from kynamo.logs import add_log_flags
from kynamo.loop import run_loop

SUMMARY = "run Kynamo on this machine: the DynamoDB API on port 8000 over one storage node per simulated zone"
DESCRIPTION = __doc__ or ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--data-dir", default="./kynamo-data", help="where every process keeps its data")
    add_flag(p, "--port", default=8000, type=int, help="DynamoDB API port (point endpoint_url here)")
    add_flag(p, "--zones", default=3, type=int, help="storage-node processes, one per simulated zone")
    add_flag(p, "--storage-base-port", default=7100, type=int,
             help="first storage-node port; node i uses base+2i (HTTP) and base+2i+1 (peer)")
    add_flag(p, "--host", default="127.0.0.1", help="address every process listens on")
    add_flag(p, "--region", default="us-east-1", help="region shown in table ARNs")
    add_flag(p, "--storage-timeout", default=10.0, type=float,
             help="seconds the router keeps retrying a partition (leader elections) before answering 503")
    from kynamo.router.auth import add_auth_flags

    add_auth_flags(p)
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


def member_of(args: argparse.Namespace, zone: int) -> str:
    port = args.storage_base_port + 2 * zone
    return f"{args.host}:{port}:{port + 1}"


def _die_with_parent() -> None:
    """Linux: a storage node gets SIGTERM if `kynamo local` itself is killed, so no orphan keeps its ports."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """The storage-node child processes, restarted when one exits unexpectedly."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ)

    def start(self) -> None:
        for zone in range(self.args.zones):
            self.procs[zone] = self._spawn(zone)

    def _spawn(self, zone: int) -> subprocess.Popen[bytes]:
        # A new session keeps a terminal's Ctrl-C away from the children: we stop them in order.
        return subprocess.Popen(node_command(self.args, zone), env=self.env, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def check(self) -> None:
        for zone, proc in self.procs.items():
            if proc.poll() is not None:
                print(f"kynamo local: zone-{zone} exited ({proc.returncode}); restarting", flush=True)
                self.procs[zone] = self._spawn(zone)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_healthy(
    session: aiohttp.ClientSession, members: list[str], sup: Supervisor, timeout: float = 60
) -> None:
    from kynamo.storage_client import api_of

    deadline = time.monotonic() + timeout
    pending = set(members)
    while pending:
        for member in list(pending):
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"http://{api_of(member)}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        pending.discard(member)
        for zone, proc in sup.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"storage node zone-{zone} exited with {proc.returncode} during startup")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"storage nodes not healthy after {timeout}s: {sorted(pending)}")
        if pending:
            await asyncio.sleep(0.05)


async def serve(args: argparse.Namespace, sup: Supervisor) -> None:
    from kynamo.control_local import LocalControlPlane
    from kynamo.router.app import build_app
    from kynamo.router.auth import from_args
    from kynamo.router.core import Router

    try:
        auth = from_args(args, args.region)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"credentials: {exc}") from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    members = [member_of(args, z) for z in range(args.zones)]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        await wait_healthy(session, members, sup)
        control = LocalControlPlane(Path(args.data_dir) / "control", [[m] for m in members], session=session,
                                    region=args.region)
        await control.start()
        router = Router(control, session, deadline=args.storage_timeout)
        runner = web.AppRunner(build_app(router, auth), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        endpoint = f"http://{args.host if args.host != '0.0.0.0' else 'localhost'}:{args.port}"
        print(f"kynamo local: DynamoDB API on {endpoint} ({args.zones} storage nodes, data in {args.data_dir})",
              flush=True)
        for zone, member in enumerate(members):
            print(f"  zone-{zone}: storage node {member}", flush=True)
        print(f"  boto3:   boto3.client('dynamodb', endpoint_url='{endpoint}', region_name='{args.region}', "
              "aws_access_key_id='x', aws_secret_access_key='x')", flush=True)
        print(f"  aws cli: aws dynamodb list-tables --endpoint-url {endpoint}", flush=True)
        print(f"  {auth.describe()}", flush=True)
        print("  Ctrl-C stops everything; data stays in the data dir.", flush=True)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if not stop.is_set():
                    sup.check()
        finally:
            await runner.cleanup()
            await control.close()


def run(args: argparse.Namespace) -> int:
    from kynamo import logs

    logs.setup(args.log_level, args.log_format)
    sup = Supervisor(args)
    sup.start()
    try:
        run_loop(serve(args, sup))
    except RuntimeError as exc:
        print(f"kynamo local: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
        print("kynamo local: stopped", flush=True)
    return 0
