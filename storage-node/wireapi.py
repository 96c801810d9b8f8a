"""The router-facing wire format: msgpack bodies and the errors a router acts on.

Routers speak to storage nodes with compact msgpack bodies over HTTP. An error
is a map with `error` set to one of the names below; `NotLeader` carries a
leader hint, `StaleEpoch` and `WrongPartition` tell the router to refresh its
routing table before retrying. `Throttled` means the partition is over its
read or write limit (it carries `table`, `partition` and `kind`): the router
answers ProvisionedThroughputExceededException and does not retry.
"""

from __future__ import annotations

from typing import Any

import msgpack
from aiohttp import web

CONTENT_TYPE = "application/x-msgpack"

NOT_LEADER = "NotLeader"
STALE_EPOCH = "StaleEpoch"
WRONG_PARTITION = "WrongPartition"
NO_SUCH_PARTITION = "NoSuchPartition"
UNAVAILABLE = "Unavailable"
BAD_REQUEST = "BadRequest"
OUTCOME_UNKNOWN = "OutcomeUnknown"
INTERNAL = "InternalError"  # a bug, not a transient state: callers must not retry it
UNAUTHORIZED = "Unauthorized"  # missing or wrong client token: a misconfiguration, never retried
THROTTLED = "Throttled"  # over the partition's read or write limit: not retried here, the client backs off

STATUS = {
    NOT_LEADER: 409,
    STALE_EPOCH: 409,
    WRONG_PARTITION: 409,
    NO_SUCH_PARTITION: 404,
    UNAVAILABLE: 503,
    BAD_REQUEST: 400,
    OUTCOME_UNKNOWN: 503,
    INTERNAL: 500,
    UNAUTHORIZED: 401,
    THROTTLED: 429,
}


class ApiError(Exception):
    def __init__(self, name: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"error": self.name, "message": self.message, **self.fields}


def pack(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def respond(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=pack(doc), status=status, content_type=CONTENT_TYPE)


def error_response(err: ApiError) -> web.Response:
    return respond(err.body(), STATUS.get(err.name, 400))


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        doc = unpack(raw) if raw else {}
    except Exception as exc:
        raise ApiError(BAD_REQUEST, f"body is not valid msgpack: {exc}") from exc
    if not isinstance(doc, dict):
        raise ApiError(BAD_REQUEST, "body must be a map")
    return doc
