"""`kynamo local`: the whole database on one machine, no Kubernetes.

Starts one storage-node process per simulated zone (three by default), waits
until they are healthy, then serves the DynamoDB API on --port from this process
with the local control plane: CreateTable places each partition's three replicas
one per zone. Table metadata and every replica's WAL and RocksDB live under
--data-dir, so a restart brings every table back.

Healing, as the operator heals a lost pod: a storage process that dies (kill -9)
is restarted at once and catches up from its own disk. One not back within
--heal-after seconds is declared lost: a fresh process takes its zone and, unless
--spares keeps some running, a spare process is started on demand; each of its
partitions gets a log-replica on the spare at once, a full replica is rebuilt in
the zone by snapshot + log, and the log-replica is retired.

Access: the storage nodes serve their HTTP API only to callers presenting the client
token and take replication frames only from peers presenting the peer token. Both are
generated once per data dir (control/tokens.json, mode 0600; --client-token and
--peer-token override them) and reach the storage processes through the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from kynamo.config import add_flag
from kynamo.local_nodes import Registry, Supervisor
from kynamo.logs import add_log_flags
from kynamo.loop import run_loop, settle_gc

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
    add_flag(p, "--heal-after", default=5.0, type=float,
             help="seconds a dead storage process may take to come back before its partitions are "
                  "rebuilt elsewhere (0: only restart it)")
    add_flag(p, "--spares", default=0, type=int,
             help="spare storage processes kept running for log-replicas during repairs "
                  "(0: one is started on demand when a process is lost)")
    add_flag(p, "--load-interval", default=10.0, type=float,
             help="seconds between readings of every partition's load (0: never split on load)")
    add_flag(p, "--leader-balance", default=True,
             help="after each load reading, hand leaderships from the process leading most partitions to one "
                  "leading fewest (a restarted process gets its share back)")
    add_flag(p, "--split-window", default=300.0, type=float,
             help="seconds a partition's load must stay over its share before it splits")
    add_flag(p, "--split-wcu", default=0.0, type=float,
             help="write units/s over which a partition counts as hot (0: its share of the table, "
                  "at most 1,000 as in DynamoDB)")
    add_flag(p, "--split-rcu", default=0.0, type=float,
             help="read units/s over which a partition counts as hot (0: its share, at most 3,000)")
    add_flag(p, "--peer-token", default="",
             help="token the storage nodes require of each other (default: generated once per data dir, "
                  "kept in <data-dir>/control/tokens.json)")
    add_flag(p, "--partition-max-rcu", default=3000.0, type=float,
             help="read units/s one partition serves at most (DynamoDB: 3,000; 0: no cap); given to the storage nodes")
    add_flag(p, "--partition-max-wcu", default=1000.0, type=float,
             help="write units/s one partition serves at most (DynamoDB: 1,000; 0: no cap); given to the storage nodes")
    from kynamo.router.options import add_router_flags

    add_router_flags(p)
    add_log_flags(p)


def storage_tokens(args: argparse.Namespace) -> dict[str, str]:
    """The client and peer tokens of this data dir's storage nodes: the flags', else the generated file's."""
    from kynamo.tokens import load_or_create

    stored = load_or_create(Path(args.data_dir) / "control")
    return {"client": args.client_token or stored["client"], "peer": args.peer_token or stored["peer"]}


async def serve(args: argparse.Namespace, sup: Supervisor, tokens: dict[str, str]) -> None:
    from kynamo.control_local import LocalControlPlane
    from kynamo.router.auth import from_args
    from kynamo.router.options import build_local

    try:
        auth = from_args(args, args.region)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"credentials: {exc}") from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from kynamo.tokens import bearer

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
    # Every request of this session goes to our own storage nodes: it presents their client token.
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15),
                                     headers=bearer(tokens["client"])) as session:
        await sup.wait_healthy(session)
        control = LocalControlPlane(Path(args.data_dir) / "control", [], session=session, region=args.region,
                                    load_interval=args.load_interval, split_window=args.split_window,
                                    split_wcu=args.split_wcu, split_rcu=args.split_rcu,
                                    partition_max=(args.partition_max_rcu, args.partition_max_wcu),
                                    burst_seconds=args.burst_seconds,
                                    on_demand_floor=(args.on_demand_initial_rcu, args.on_demand_initial_wcu),
                                    on_demand_window=args.on_demand_window,
                                    balance_leaders=args.leader_balance)

        def publish() -> None:
            control.set_nodes(*sup.registry.view(sup.healthy))

        publish()
        sup.on_change = publish
        await control.start()
        _, app = build_local(args, control, session, auth)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        settle_gc()
        endpoint = f"http://{args.host if args.host != '0.0.0.0' else 'localhost'}:{args.port}"
        nodes = sup.registry.running()
        print(f"kynamo local: DynamoDB API on {endpoint} ({len(nodes)} storage nodes, data in {args.data_dir})",
              flush=True)
        for node in nodes:
            print(f"  {node.name}: storage node {node.member} ({node.state})", flush=True)
        print(f"  boto3:   boto3.client('dynamodb', endpoint_url='{endpoint}', region_name='{args.region}', "
              "aws_access_key_id='x', aws_secret_access_key='x')", flush=True)
        print(f"  aws cli: aws dynamodb list-tables --endpoint-url {endpoint}", flush=True)
        print(f"  {auth.describe()}", flush=True)
        print(f"  storage nodes require tokens: {Path(args.data_dir) / 'control' / 'tokens.json'} "
              "(a standalone router presents \"client\" as KYNAMO_CLIENT_TOKEN)", flush=True)
        print("  Ctrl-C stops everything; data stays in the data dir.", flush=True)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if not stop.is_set():
                    await sup.check(session)
        finally:
            await runner.cleanup()
            await control.close()


def run(args: argparse.Namespace) -> int:
    from kynamo import logs

    logs.setup(args.log_level, args.log_format)
    try:
        tokens = storage_tokens(args)
    except (OSError, ValueError) as exc:
        print(f"kynamo local: tokens: {exc}", file=sys.stderr, flush=True)
        return 1
    registry = Registry(Path(args.data_dir), args.host, args.zones, args.storage_base_port)
    sup = Supervisor(args, registry, heal_after=args.heal_after, spares=args.spares, tokens=tokens)
    sup.start()
    try:
        run_loop(serve(args, sup, tokens))
    except RuntimeError as exc:
        print(f"kynamo local: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
        print("kynamo local: stopped", flush=True)
    return 0
