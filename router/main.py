"""`kynamo router`: the DynamoDB API as its own process, in front of the storage nodes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "the DynamoDB API as its own process (several share one table's capacity through the GAC)"
DESCRIPTION = """\
Serve DynamoDB's JSON 1.0 protocol (boto3, the AWS CLI) and route item
operations to partition leaders. Routing metadata comes from --control-url:
a `kynamo local` (which serves its control plane and its global admission
controller on its API port), so several routers can front one set of storage
nodes. Provisioned capacity is shared through the GAC at --gac-url (without it
this router keeps an in-process GAC, correct only when it is the only router).
The Kubernetes routing source (the operator's ConfigMaps) and the Lease-elected
GAC are not built yet.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kynamo.router.options import add_router_flags

    add_flag(p, "--host", default="127.0.0.1", help="address to listen on")
    add_flag(p, "--port", default=8000, type=int, help="DynamoDB API port")
    add_flag(p, "--control-url", default="", help="control plane to read tables and routing from (a kynamo local)")
    add_flag(p, "--gac-url", default="", help="global admission controller shared by every router of the tables")
    add_flag(p, "--region", default="us-east-1", help="signing region and the region shown in table ARNs")
    add_flag(p, "--storage-timeout", default=10.0, type=float,
             help="seconds the router keeps retrying a partition before answering 503")
    add_router_flags(p)
    add_log_flags(p)


async def serve(args: argparse.Namespace) -> None:
    import aiohttp
    from aiohttp import web
    from kynamo.router.app import build_app
    from kynamo.router.auth import from_args
    from kynamo.router.control_http import RemoteControlPlane
    from kynamo.router.core import Router
    from kynamo.router.options import remote_admission

    auth = from_args(args, args.region)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        control = RemoteControlPlane(args.control_url, session, region=args.region,
                                     token=args.internal_token or None)
        await control.start()
        admission = remote_admission(args, session)
        router = Router(control, session, deadline=args.storage_timeout, admission=admission)
        runner = web.AppRunner(build_app(router, auth), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        gac = args.gac_url or "in-process (single router only)"
        print(f"kynamo router: DynamoDB API on http://{args.host}:{args.port}, control {args.control_url}, "
              f"GAC {gac}", flush=True)
        print(f"  {auth.describe()}", flush=True)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
        finally:
            await runner.cleanup()
            await admission.close()
            await control.close()


def run(args: argparse.Namespace) -> int:
    from kynamo import logs

    logs.setup(args.log_level, args.log_format)
    if not args.control_url:
        print("kynamo router: --control-url is required (a `kynamo local` serving its control plane); the "
              "Kubernetes routing source is not built yet.", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args))
    except (OSError, ValueError) as exc:
        print(f"kynamo router: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
