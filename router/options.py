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
from kynamo.router.gac import GlobalAdmission
from kynamo.router.gac_http import HttpGAC, gac_routes

from kynamo.config import add_flag


def add_router_flags(p: argparse.ArgumentParser) -> None:
    add_auth_flags(p)
    add_flag(p, "--burst-seconds", default=BURST_SECONDS, type=float,
             help="unused capacity a provisioned table keeps, in seconds of its rate (DynamoDB: 300)")
    add_flag(p, "--admission", default=True, help="enforce provisioned capacity (off: benchmarks only)")
    add_flag(p, "--internal-token", default="",
             help="bearer token for the internal control/GAC endpoints (required there when access keys are set)")


def internal_token(args: argparse.Namespace, auth: Authenticator) -> str | None:
    """None: internal endpoints open (anonymous mode); '': refuse them (keys set but no token)."""
    if args.internal_token:
        return str(args.internal_token)
    return None if not auth.keys else uuid.uuid4().hex  # unguessable: effectively closed


def build_local(args: argparse.Namespace, control: Any, session: aiohttp.ClientSession,
                auth: Authenticator) -> tuple[Router, web.Application]:
    """`kynamo local`'s router: in-process GAC, also served (with the control plane) to standalone routers."""
    from kynamo.router.app import build_app

    gac = GlobalAdmission()
    admission = Admission(gac, router_id="local", burst_seconds=args.burst_seconds, enabled=args.admission)
    router = Router(control, session, deadline=args.storage_timeout, admission=admission)
    token = internal_token(args, auth)
    return router, build_app(router, auth, extra=[*gac_routes(gac, token), *control_routes(control, token)])


def remote_admission(args: argparse.Namespace, session: aiohttp.ClientSession) -> Admission:
    """A standalone router's admission: the GAC at --gac-url, else an in-process one (one router only)."""
    router_id = f"router-{uuid.uuid4().hex[:8]}"
    gac: Any = HttpGAC(args.gac_url, session, args.internal_token or None) if args.gac_url else None
    return Admission(gac, router_id=router_id, burst_seconds=args.burst_seconds, enabled=args.admission)
