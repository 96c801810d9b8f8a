"""Who may call a storage node's HTTP API: only holders of the client token.

Routers, the control plane, the operator and peers (snapshot installs, scrub) present
`Authorization: Bearer <token>`; anything else on the pod network gets 401 `Unauthorized`
before any handler runs, so it can neither read nor write around the router. The check
runs before the body is read and before a replica is looked up. Health, readiness and
/metrics stay open for kubelets and Prometheus. No token configured: the API is open
(tests and single-user machines), and the node says so at startup.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from kynamo.storage_node import metrics as m
from kynamo.storage_node import wireapi as w

from kynamo.tokens import accepts, bearer, token_list

__all__ = ["bearer", "check", "middleware", "middlewares", "presented", "refusal"]

log = logging.getLogger("kynamo.storage_node.access")

PROTECTED_PREFIX = "/v1/"
CLIENT_PREFIX = "/v1/p/"
_SCHEME = b"bearer "

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def presented(header: str | None) -> bytes | None:
    """The token in an `Authorization: Bearer ...` header, or None when there is none."""
    if not header:
        return None
    raw = header.encode("utf-8", "surrogateescape")
    if raw[: len(_SCHEME)].lower() != _SCHEME:
        return None
    return raw[len(_SCHEME):].strip()


def check(header: str | None, expected: bytes | list[bytes]) -> str | None:
    """None when the header carries an expected token (any of a list), else why not ("missing" or "wrong")."""
    token = presented(header)
    if token is None:
        return "missing"
    if isinstance(expected, bytes):
        return None if hmac.compare_digest(token, expected) else "wrong"
    return None if accepts(expected, token) else "wrong"


def refusal(path: str, reason: str) -> web.Response:
    """401 in the wire shape of the API that was called: msgpack for clients, JSON for admin."""
    err = w.ApiError(w.UNAUTHORIZED, f"{reason} client token: present the storage nodes' client token "
                                     "(Authorization: Bearer, KYNAMO_CLIENT_TOKEN)")
    headers = {"WWW-Authenticate": 'Bearer realm="kynamo-storage"'}
    if path.startswith(CLIENT_PREFIX):
        resp = w.error_response(err)
    else:
        resp = web.json_response(err.body(), status=w.STATUS[w.UNAUTHORIZED])
    resp.headers.update(headers)
    return resp


def middleware(token: str | None) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]] | None:
    """The aiohttp middleware that enforces `token` on `/v1/...`, or None when no token is set.

    `token` may list several comma-separated tokens (rotation): any of them is accepted.
    """
    expected = [t.encode() for t in token_list(token)]
    if not expected:
        return None
    for api in ("client", "admin"):  # exported at 0 from the start, for alerts
        for reason in ("missing", "wrong"):
            m.UNAUTHORIZED.labels(api, reason)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PROTECTED_PREFIX):
            return await handler(request)
        reason = check(request.headers.get("Authorization"), expected)
        if reason is None:
            return await handler(request)
        api = "client" if request.path.startswith(CLIENT_PREFIX) else "admin"
        m.UNAUTHORIZED.labels(api, reason).inc()
        log.debug("request refused", extra={"ctx": {"remote": request.remote, "path": request.path,
                                                    "method": request.method, "reason": reason}})
        return refusal(request.path, reason)

    return require_token


def middlewares(token: str | None) -> list[Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]]:
    """What node.py installs first in its app's middleware chain."""
    mw = middleware(token)
    return [mw] if mw is not None else []
