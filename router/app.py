"""The HTTP face of the router: one POST endpoint dispatching on X-Amz-Target.

Every failure is turned into a DynamoDB error response here; an unexpected
exception becomes InternalServerError (500) and is logged with its stack, since
it can only be a bug in Kynamo: bad input always maps to a 400.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from kynamo.router import batch, items, metrics, scan, tables
from kynamo.router.auth import Authenticator
from kynamo.router.core import Router
from kynamo.router.fasthttp import FastServer
from kynamo.router.protocol import (
    TARGET_PREFIX,
    DynamoError,
    InternalServerError,
    ProvisionedThroughputExceededException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
    bytes_response,
    decode_body,
    dumps,
    operation_of,
    request_id,
)
from kynamo.router.sigv4 import (
    AccessDeniedException,
    Headers,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("kynamo.router")

Handler = Callable[[Router, dict[str, Any]], Awaitable[dict[str, Any]]]
OPERATIONS: dict[str, Handler] = {
    "CreateTable": tables.create_table,
    "DescribeTable": tables.describe_table,
    "ListTables": tables.list_tables,
    "DeleteTable": tables.delete_table,
    "UpdateTable": tables.update_table,
    "PutItem": items.put_item,
    "GetItem": items.get_item,
    "UpdateItem": items.update_item,
    "DeleteItem": items.delete_item,
    "Query": scan.query,
    "Scan": scan.scan,
    "BatchGetItem": batch.batch_get_item,
    "BatchWriteItem": batch.batch_write_item,
}
AUTH_ERRORS = (AccessDeniedException, IncompleteSignatureException, InvalidSignatureException,
               MissingAuthenticationTokenException, UnrecognizedClientException)
MAX_REQUEST_BYTES = 16 << 20
# Single-table operations and the bucket they are admitted on: what the early refusal may answer.
EARLY_KINDS = {"PutItem": "write", "UpdateItem": "write", "DeleteItem": "write",
               "GetItem": "read", "Query": "read", "Scan": "read"}
# A top-level "TableName" with a plain table name (DynamoDB's charset, no escapes): the early refusal's hint.
_TABLE_NAME = re.compile(rb'"TableName"\s*:\s*"([a-zA-Z0-9_.-]{3,255})"')
_THROTTLED = ProvisionedThroughputExceededException()
THROTTLED_BODY = dumps(_THROTTLED.body())
HEALTHY = b"healthy: dynamodb.us-east-1.amazonaws.com "


def _table_label(router: Router, body: dict[str, Any]) -> str:
    """Label metrics only with tables that exist, so junk names cannot explode cardinality."""
    name = body.get("TableName")
    return name if isinstance(name, str) and router.control.get(name) is not None else "-"


FAST_CALL = web.AppKey("kynamo_fast_call", object)
FAST_EARLY = web.AppKey("kynamo_fast_early", object)

# (method, raw path, raw query, header lookup, raw body) -> (status, body, request id), or None: not answered
Early = Callable[[str, str, str, Callable[[str], Any], bytes], "tuple[int, bytes, str] | None"]


def early_refusal(router: Router, auth: Authenticator) -> Early:
    """Refuse a request to a table being throttled before parsing it: refusals must cost little.

    While some table's bucket is refusing (Admission.refusing), a request to it is answered
    from X-Amz-Target and the body's one "TableName" alone, after authentication and the
    key's permissions and before JSON parsing, validation and item decoding. The answer is
    the one the full path would give (ProvisionedThroughputExceededException, 400). Anything
    the quick look cannot settle (another table, a batch, a name that appears twice or
    escaped, a failed signature, a bucket that may have tokens) returns None: the full path
    answers, exactly as before. One consequence: a malformed request to a throttled table
    is refused as throttled rather than as malformed.
    """
    admission = router.admission
    control = router.control

    def early(method: str, raw_path: str, raw_query: str, getall: Callable[[str], Any],
              raw: bytes) -> tuple[int, bytes, str] | None:
        if not admission.refusing:
            return None
        started = time.perf_counter()
        targets = getall("X-Amz-Target")
        target = targets[0] if targets else ""
        if not target.startswith(TARGET_PREFIX):
            return None
        op = target[len(TARGET_PREFIX):]
        kind = EARLY_KINDS.get(op)
        if kind is None:
            return None
        found = _TABLE_NAME.search(raw)
        if found is None or raw.count(b'"TableName"') != 1:
            return None
        name = found.group(1).decode("ascii")
        if (name, kind) not in admission.refusing:
            return None
        meta = control.get(name)
        if meta is None or meta["status"] not in ("ACTIVE", "UPDATING"):
            return None
        try:  # authentication first: nothing unauthenticated is ever told a table is throttled
            key = auth.authenticate(method, raw_path, raw_query, Headers(getall), raw)
            auth.authorize(key, op, {"TableName": name})
        except DynamoError:
            return None  # the full path answers (and counts) the refusal
        if not admission.refuse_now(meta, kind):
            return None
        metrics.child(metrics.EARLY_REFUSALS, name, kind).inc()
        metrics.child(metrics.ERRORS, name, op, _THROTTLED.type_name).inc()
        metrics.child(metrics.REQUESTS, name, op).inc()
        metrics.child(metrics.LATENCY, op).observe(time.perf_counter() - started)
        return _THROTTLED.status, THROTTLED_BODY, request_id()

    return early

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp discourages subclassing; see below

    class _App(web.Application):
        """aiohttp's Application whose connections meet FastHttp first (see fasthttp.py).

        aiohttp builds its protocol factory in `Application._make_handler`; wrapping it is the
        one place a runner's listening socket can get another protocol without a custom runner.
        """

        def _make_handler(self, *args: Any, **kwargs: Any) -> Any:
            server = super()._make_handler(*args, **kwargs)
            call = self.get(FAST_CALL)
            if call is None:
                return server
            return FastServer(call, server, self._client_max_size, early=self.get(FAST_EARLY))  # type: ignore[arg-type]


def build_app(router: Router, auth: Authenticator | None = None,
              extra: list[web.RouteDef] | None = None, *, fast: bool = True) -> web.Application:
    """The API app; `auth` None means every request is anonymous (tests of the bare router).

    `fast`: serve SDK-shaped requests through FastHttp (aiohttp still gets every other request).
    """
    app = _App(client_max_size=MAX_REQUEST_BYTES + 1024)
    auth = auth or Authenticator({}, allow_anonymous=True)

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=HEALTHY, content_type="text/plain")

    async def prom(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def call(method: str, raw_path: str, raw_query: str, getall: Callable[[str], Any],
                   raw: bytes | None) -> tuple[int, bytes, str]:
        """One API request from its parts: (status, JSON body, request id). Never raises."""
        rid = request_id()
        started = time.perf_counter()
        op = "-"
        table = "-"
        try:
            if raw is None:
                raise ValidationException("Request size exceeded the maximum allowed size")
            # Authentication comes first: nothing unauthenticated is parsed further or reaches storage.
            key = auth.authenticate(method, raw_path, raw_query, Headers(getall), raw)
            targets = getall("X-Amz-Target")
            op = operation_of(next(iter(targets), None))
            handler = OPERATIONS.get(op)
            if handler is None:
                op = "-"
                raise UnknownOperationException()
            body = decode_body(raw)
            auth.authorize(key, op, body)
            table = _table_label(router, body)
            router.begin()
            try:
                result = await handler(router, body)
            finally:
                router.release()
            status, payload = 200, dumps(result)
        except DynamoError as err:
            if isinstance(err, AUTH_ERRORS):
                metrics.AUTH_FAILURES.labels(err.type_name).inc()
            metrics.child(metrics.ERRORS, table, op, err.type_name).inc()
            status, payload = err.status, dumps(err.body())
        except RecursionError:
            metrics.ERRORS.labels(table, op, "SerializationException").inc()
            err = SerializationException("Request is nested too deeply")
            status, payload = err.status, dumps(err.body())
        except Exception:
            log.exception("request failed", extra={"ctx": {"operation": op, "request_id": rid}})
            metrics.ERRORS.labels(table, op, "InternalServerError").inc()
            err = InternalServerError()
            status, payload = err.status, dumps(err.body())
        metrics.child(metrics.REQUESTS, table, op).inc()
        metrics.child(metrics.LATENCY, op).observe(time.perf_counter() - started)
        return status, payload, rid

    async def api(request: web.Request) -> web.Response:
        try:
            raw: bytes | None = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        url = request.rel_url

        def getall(name: str) -> Any:
            return request.headers.getall(name, ())

        answer = early(request.method, url.raw_path, url.raw_query_string, getall, raw) if raw is not None else None
        if answer is None:
            answer = await call(request.method, url.raw_path, url.raw_query_string, getall, raw)
        status, payload, rid = answer
        return bytes_response(payload, status, rid)

    early = early_refusal(router, auth)
    if fast:
        app[FAST_CALL] = call
        app[FAST_EARLY] = early
    app.router.add_get("/", health)
    app.router.add_get("/metrics", prom)
    app.router.add_post("/", api)
    app.add_routes(extra or [])
    return app

