"""`kynamo router`: the DynamoDB API as its own process, in front of the storage nodes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from kynamo.config import add_flag
from kynamo.logs import add_log_flags
from kynamo.loop import run_loop, settle_gc

SUMMARY = "the DynamoDB API as its own process (several share one table's capacity through the GAC)"
DESCRIPTION = """\
Serve DynamoDB's JSON 1.0 protocol (boto3, the AWS CLI) and route item
operations to partition leaders. Routing comes from Kubernetes (the
default): the operator's routing ConfigMaps and `Table` resources in
--namespace, with one router elected through the Lease --gac-lease to serve the
global admission controller (GAC) to the others. With --control-url it comes
from a `kynamo local` (which serves its control plane and its GAC on its API
port) instead. --gac-url pins the GAC to one address (without it and without a
Lease, this router keeps an in-process GAC, correct only when it is alone).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kynamo.router.options import add_router_flags

    add_flag(p, "--host", default="127.0.0.1", help="address to listen on")
    add_flag(p, "--port", default=8000, type=int, help="DynamoDB API port")
    add_flag(p, "--control-url", default="", help="control plane to read tables and routing from (a kynamo local)")
    add_flag(p, "--gac-url", default="", help="global admission controller shared by every router of the tables")
    add_flag(p, "--routing-source", default="", choices=["kubernetes", "control-url"],
             help="where tables and routing come from (default: control-url when --control-url is given, "
                  "else kubernetes)")
    add_flag(p, "--namespace", default="", help="Kubernetes namespace of the Tables and routing ConfigMaps "
                                                 "(default: the pod's own, else 'default')")
    add_flag(p, "--gac-lease", default="kynamo-router-gac",
             help="Lease electing the router that serves the GAC on Kubernetes ('' : no election)")
    add_flag(p, "--lease-duration", default=10.0, type=float, help="seconds a GAC Lease holder may go silent")
    add_flag(p, "--advertise", default="",
             help="host:port other routers reach this one at (default: $POD_IP or --host, and --port)")
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
    from kynamo.router.core import Router
    from kynamo.router.options import remote_admission, routing_source

    auth = from_args(args, args.region)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from kynamo.tokens import bearer

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
    timeout = aiohttp.ClientTimeout(total=15)
    # Two sessions: only the one that talks to storage nodes carries their client token.
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=bearer(args.client_token)) as storage, \
            aiohttp.ClientSession(timeout=timeout) as session:
        control, elector, where = routing_source(args, session, storage)
        await control.start()
        admission, extra, gac = remote_admission(args, session, elector, auth)
        router = Router(control, storage, deadline=args.storage_timeout, admission=admission)
        runner = web.AppRunner(build_app(router, auth, extra=extra), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        if elector is not None:
            await elector.start()
        settle_gc()
        print(f"kynamo router: DynamoDB API on http://{args.host}:{args.port}, control {where}, "
              f"GAC {gac}", flush=True)
        print(f"  {auth.describe()}", flush=True)
        if not args.client_token:
            print("  storage nodes: no client token presented (KYNAMO_CLIENT_TOKEN unset)", flush=True)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
        finally:
            if elector is not None:
                await elector.close()
            await runner.cleanup()
            await admission.close()
            await control.close()


def run(args: argparse.Namespace) -> int:
    from kynamo import logs

    logs.setup(args.log_level, args.log_format)
    if args.routing_source == "control-url" and not args.control_url:
        print("kynamo router: --routing-source control-url needs --control-url (a `kynamo local`)", file=sys.stderr)
        return 2
    try:
        run_loop(serve(args))  # uvloop: a router's work is HTTP in and out, several times cheaper on it
    except (OSError, ValueError) as exc:
        print(f"kynamo router: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
