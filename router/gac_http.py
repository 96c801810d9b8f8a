"""The GAC over HTTP: the routes one router serves, and the client the others use.

`POST /kynamo/v1/gac/grant` with `{"router", "table", "kind", "rate", "want", "burst", "label", "peak"}`
answers `{"tokens", "routers", "balance", "rate"}` (rate 0 asks for an on-demand
table: the GAC picks the rate and says which; `peak`, optional, is that table's
recorded previous peak). Internal endpoints take the bearer token
`--internal-token` (KYNAMO_INTERNAL_TOKEN) when one is set.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from kynamo.router.gac import GlobalAdmission, Grant

PATH = "/kynamo/v1/gac/grant"
TIMEOUT = aiohttp.ClientTimeout(total=0.5)


def check_token(request: web.Request, token: str | None) -> None:
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        raise web.HTTPForbidden(text="internal endpoint: missing or wrong bearer token")


async def answer(request: web.Request, gac: GlobalAdmission) -> web.Response:
    """One grant request against `gac`: the JSON answer, or 400 for a malformed request."""
    try:
        doc = json.loads(await request.read())
        g = gac.grant(str(doc["router"]), str(doc["table"]), str(doc["kind"]), float(doc["rate"]),
                      float(doc["want"]), float(doc["burst"]), str(doc.get("label") or "-"),
                      float(doc.get("peak") or 0.0))
    except (ValueError, KeyError, TypeError) as exc:
        raise web.HTTPBadRequest(text=f"bad grant request: {exc!r}") from None
    return web.json_response({"tokens": g.tokens, "routers": g.routers, "balance": g.balance, "rate": g.rate})


def gac_routes(gac: GlobalAdmission, token: str | None) -> list[web.RouteDef]:
    async def grant(request: web.Request) -> web.Response:
        check_token(request, token)
        return await answer(request, gac)

    return [web.post(PATH, grant)]


class HttpGAC:
    """A remote GAC; every failure raises, and the caller's admission degrades on its own."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None = None) -> None:
        self.url = url.rstrip("/") + PATH
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def grant(self, router: str, table: str, kind: str, rate: float, want: float,
                    burst_seconds: float, label: str, peak: float = 0.0) -> Grant:
        body: dict[str, Any] = {"router": router, "table": table, "kind": kind, "rate": rate, "want": want,
                                "burst": burst_seconds, "label": label, "peak": peak}
        async with self.session.post(self.url, json=body, headers=self.headers, timeout=TIMEOUT) as resp:
            resp.raise_for_status()
            doc = await resp.json()
        return Grant(float(doc["tokens"]), int(doc["routers"]), float(doc["balance"]), float(doc.get("rate") or 0))
