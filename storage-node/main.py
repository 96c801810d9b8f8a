"""`kynamo storage-node`: run one storage-node process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

from kynamo.config import add_flag
from kynamo.logs import add_log_flags, setup
from kynamo.loop import run_loop, settle_gc

log = logging.getLogger("kynamo.storage_node")

SUMMARY = "host partition replicas (Multi-Paxos, checksummed WAL, RocksDB state)"
DESCRIPTION = """\
Run a storage-node process. It hosts any number of partition replicas, each a
member of one Multi-Paxos group, and serves:

  HTTP on --port        the client API routers use (msgpack bodies), the admin
                        API the control plane drives (/v1/partitions/...),
                        /metrics, /healthz and /readyz
  TCP  on --peer-port   batched, CRC32C-checksummed frames between group members

With --client-token every /v1/ request must carry `Authorization: Bearer <token>`
(else 401 Unauthorized); with --peer-token peers must present that token to connect.
Give both through the environment (KYNAMO_CLIENT_TOKEN, KYNAMO_PEER_TOKEN): argv is
visible to every user of the machine.

Its member id is HOST:PORT:PEER_PORT (HOST = --advertise-host). Everything it
hosts lives under --data-dir and is reopened on restart; `kill -9` loses no
acknowledged write.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--data-dir", default="./kynamo-data/node", help="directory for WALs and RocksDB state")
    add_flag(p, "--host", default="127.0.0.1", help="address to listen on")
    add_flag(p, "--advertise-host", default="", help="host peers and routers use to reach this process "
             "(default: --host, or the hostname when listening on 0.0.0.0)")
    add_flag(p, "--port", default=7100, type=int, help="HTTP port: client, admin and metrics API")
    add_flag(p, "--peer-port", default=7101, type=int, help="TCP port for replication frames")
    add_flag(p, "--peer-token", default="", help="shared secret peers present when they connect; several "
             "comma-separated: any is accepted and the first presented (rotation); pass it through the "
             "environment: argv shows in `ps`")
    add_flag(p, "--client-token", default="", help="bearer token every /v1/ HTTP caller must present "
             "(routers, control plane, operator, peers); several comma-separated: any is accepted and the first "
             "presented (rotation); empty: the API is open to anyone who can reach it")
    add_flag(p, "--heartbeat-interval", default=0.05, type=float, help="leader heartbeat period, seconds")
    add_flag(p, "--election-timeout", default=0.5, type=float,
             help="silence after which a follower checks its peers and may start an election, seconds")
    add_flag(p, "--scrub-interval", default=300.0, type=float,
             help="seconds between scrub comparisons led by each leader (0 disables)")
    add_flag(p, "--log-retention", default=10_000, type=int,
             help="committed entries kept in the log behind a snapshot (log-replicas keep as many)")
    add_flag(p, "--max-read-lag", default=100, type=int,
             help="log entries a follower may trail its leader's commit index and still serve eventually "
             "consistent reads (it must also hear its leader within --election-timeout; else Unavailable)")
    add_flag(p, "--io-threads", default=4, type=int, help="threads for fsync, RocksDB batches and checkpoints")
    add_flag(p, "--aio-fsync", default=True, help="sync the WAL through Linux native AIO, with no thread "
             "hand-off, where the kernel offers it (4.18+); off: a thread syncs it")
    add_flag(p, "--partition-max-rcu", default=3000.0, type=float,
             help="read units/s one partition serves at most, whatever its limits (DynamoDB: 3,000; 0: no cap)")
    add_flag(p, "--partition-max-wcu", default=1000.0, type=float,
             help="write units/s one partition serves at most, whatever its limits (DynamoDB: 1,000; 0: no cap)")
    add_log_flags(p)


def run(args: argparse.Namespace) -> int:
    setup(args.log_level, args.log_format)
    from kynamo.storage_node.members import member_id
    from kynamo.storage_node.node import StorageNode
    from kynamo.storage_node.paxos import Options

    host = args.advertise_host or (socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host)
    options = Options(
        heartbeat_interval=args.heartbeat_interval,
        election_timeout=args.election_timeout,
        log_replica_retention=args.log_retention,
        max_read_lag=args.max_read_lag,
    )
    node = StorageNode(
        Path(args.data_dir),
        member_id(host, args.port, args.peer_port),
        options=options,
        peer_token=args.peer_token or None,
        client_token=args.client_token or None,
        scrub_interval=args.scrub_interval,
        threads=args.io_threads,
        aio_fsync=args.aio_fsync,
        partition_max_rcu=args.partition_max_rcu,
        partition_max_wcu=args.partition_max_wcu,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await node.start(args.host, args.port, args.peer_port)
        settle_gc()  # full collections were the tail of the write latency
        print(f"kynamo storage-node {node.member_id} serving on http://{args.host}:{args.port}", flush=True)
        if not args.client_token or not args.peer_token:
            open_ = [n for n, v in (("client API", args.client_token), ("peer port", args.peer_token)) if not v]
            log.warning("no token set: %s open to anyone who can reach it", " and ".join(open_),
                        extra={"ctx": {"set": "KYNAMO_CLIENT_TOKEN / KYNAMO_PEER_TOKEN"}})
        await stop.wait()
        await node.close()

    run_loop(serve())
    return 0
