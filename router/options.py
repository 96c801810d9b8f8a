"""Router flags shared by `kynamo local` and `kynamo router`, and the app they assemble."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from kynamo.router.admission import BURST_SECONDS, Admission
from kynamo.router.auth import Authenticator, add_auth_flags
from kynamo.router.control_http import control_routes
from kynamo.router.core import Router
from kynamo.router.gac import GlobalAdmission, OnDemand
from kynamo.router.gac_http import HttpGAC, gac_routes

from kynamo.config import add_flag


def add_router_flags(p: argparse.ArgumentParser) -> None:
    add_auth_flags(p)
    add_flag(p, "--burst-seconds", default=BURST_SECONDS, type=float,
             help="unused capacity a provisioned table keeps, in seconds of its rate (DynamoDB: 300)")
    add_flag(p, "--admission", default=True,
             help="enforce table capacity, provisioned and on-demand (off: benchmarks only)")
    add_flag(p, "--on-demand-initial-rcu", default=12000.0, type=float,
             help="read units/s a new on-demand table serves at once (DynamoDB: 12,000)")
    add_flag(p, "--on-demand-initial-wcu", default=4000.0, type=float,
             help="write units/s a new on-demand table serves at once (DynamoDB: 4,000)")
    add_flag(p, "--on-demand-window", default=1800.0, type=float,
             help="seconds over which an on-demand table's peak is measured: it may reach twice its previous "
                  "peak at once, more only once a window has closed (DynamoDB: 30 minutes)")
    add_flag(p, "--internal-token", default="",
             help="bearer token for the internal control/GAC endpoints (required there when access keys are set)")
    add_flag(p, "--client-token", default="",
             help="token presented to the storage nodes (their --client-token; from a Secret on Kubernetes)")


def internal_token(args: argparse.Namespace, auth: Authenticator) -> str | None:
    """None: internal endpoints open (anonymous mode); '': refuse them (keys set but no token)."""
    if args.internal_token:
        return str(args.internal_token)
    return None if not auth.keys else uuid.uuid4().hex  # unguessable: effectively closed


def on_demand_of(args: argparse.Namespace) -> OnDemand:
    return OnDemand(args.on_demand_initial_rcu, args.on_demand_initial_wcu, args.on_demand_window)


def build_local(args: argparse.Namespace, control: Any, session: aiohttp.ClientSession,
                auth: Authenticator) -> tuple[Router, web.Application]:
    """`kynamo local`'s router: in-process GAC, also served (with the control plane) to standalone routers."""
    from kynamo.router.app import build_app

    on_demand = on_demand_of(args)
    gac = GlobalAdmission(on_demand=on_demand)
    admission = Admission(gac, router_id="local", burst_seconds=args.burst_seconds, enabled=args.admission,
                          on_demand=on_demand)
    router = Router(control, session, deadline=args.storage_timeout, admission=admission)
    token = internal_token(args, auth)
    return router, build_app(router, auth, extra=[*gac_routes(gac, token), *control_routes(control, token)])


def routing_source(args: argparse.Namespace, session: aiohttp.ClientSession,
                   storage: aiohttp.ClientSession | None = None) -> tuple[Any, Any, str]:
    """A standalone router's control plane, its GAC Lease elector (or None) and a line saying where from.

    `storage` is the session that presents the client token: the Kubernetes source reads partition
    status from the storage nodes with it; the control URL (another process) never sees the token.
    """
    import os

    source = args.routing_source or ("control-url" if args.control_url else "kubernetes")
    if source == "control-url":
        from kynamo.router.control_http import RemoteControlPlane

        control = RemoteControlPlane(args.control_url, session, region=args.region, token=args.internal_token or None)
        return control, None, args.control_url
    from kubernetes.config import ConfigException
    from kynamo.router.k8s_lease import LeaseElector
    from kynamo.router.k8s_routing import KubernetesControlPlane, load_api_client

    try:
        api = load_api_client()
    except ConfigException as exc:
        raise ValueError(f"no Kubernetes credentials (KUBECONFIG or in-cluster): {exc}") from None
    namespace = args.namespace or _pod_namespace()
    control = KubernetesControlPlane(namespace, storage or session, region=args.region, api=api)
    elector = None
    if args.gac_lease and not args.gac_url:
        host = os.environ.get("POD_IP") or args.host
        if host in ("0.0.0.0", "::", ""):  # a wildcard is no address to reach: the pod's own name's
            import socket

            host = socket.gethostbyname(socket.gethostname())
        identity = args.advertise or f"{host}:{args.port}"
        elector = LeaseElector(api, namespace, args.gac_lease, identity, duration=args.lease_duration)
    return control, elector, f"kubernetes namespace {namespace}"


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def remote_admission(args: argparse.Namespace, session: aiohttp.ClientSession, elector: Any = None,
                     auth: Authenticator | None = None) -> tuple[Admission, list[web.RouteDef], str]:
    """A standalone router's admission, the routes it serves and a line describing its GAC.

    The GAC is --gac-url when given, else the Lease-elected one (this router serves it while
    it holds the Lease), else in-process (correct for one router only).
    """
    router_id = f"router-{uuid.uuid4().hex[:8]}"
    gac: Any = None
    extra: list[web.RouteDef] = []
    where = "in-process (single router only)"
    if args.gac_url:
        gac, where = HttpGAC(args.gac_url, session, args.internal_token or None), args.gac_url
    elif elector is not None:
        from kynamo.router.k8s_lease import ElectedGAC

        gac = ElectedGAC(elector, session, args.internal_token or None, on_demand_of(args))
        token = internal_token(args, auth) if auth is not None else (args.internal_token or None)
        extra, where = gac.routes(token), f"elected through Lease {args.gac_lease} as {elector.identity}"
    admission = Admission(gac, router_id=router_id, burst_seconds=args.burst_seconds, enabled=args.admission,
                          on_demand=on_demand_of(args))
    return admission, extra, where
