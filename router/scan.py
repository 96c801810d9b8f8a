"""Query and Scan: one partition key's collection, or the whole table in key order.

Pages stop at `Limit` evaluated items or about 1 MB read, as in DynamoDB; the
LastEvaluatedKey is the key at the storage node's last position, so resuming
works across partitions (a Scan walks partitions in position order).
"""

from __future__ import annotations

from typing import Any

from kynamo.router import keycond
from kynamo.router.attrs import item_to_wire, key_from_wire
from kynamo.router.core import Router, consumed, page_units
from kynamo.router.exprs import Expressions, refuse_mixed
from kynamo.router.protocol import DynamoError, ValidationException
from kynamo.router.validate import (
    SELECT,
    attribute_names,
    boolean,
    distinct_names,
    integer,
    reject_legacy,
    return_consumed,
    string,
    table_name,
)

from kynamo import keycodec, planner
from kynamo.keycodec import KeySchema

PAGE_BYTES = 1 << 20
# Each operation's expression parameters, in the order DynamoDB lists them in its messages.
SCAN_EXPRESSIONS = ("ProjectionExpression", "FilterExpression")
QUERY_EXPRESSIONS = (*SCAN_EXPRESSIONS, "KeyConditionExpression")


def _start_key(schema: KeySchema, body: dict[str, Any]) -> bytes | None:
    if body.get("ExclusiveStartKey") is None:
        return None
    try:
        key = key_from_wire(schema, body.get("ExclusiveStartKey"))
    except DynamoError as exc:
        if exc.type_name != "ValidationException":
            raise
        raise ValidationException(f"The provided starting key is invalid: {exc.message}") from None
    return keycodec.position(schema, key)


class _Read:
    """The parameters Query and Scan share."""

    def __init__(self, body: dict[str, Any], *, query: bool) -> None:
        self.table = table_name(body)
        if body.get("IndexName") is not None:
            index = string(body, "IndexName")
            raise ValidationException(f"The table does not have the specified index: {index}")
        self.select = string(body, "Select", enum=SELECT)
        self.limit = integer(body, "Limit", min_value=1)
        self.consistent = bool(boolean(body, "ConsistentRead"))
        self.mode = return_consumed(body)
        reject_legacy(body, "ConditionalOperator", "QueryFilter" if query else "ScanFilter",
                      *(("KeyConditions",) if query else ()))
        fields = QUERY_EXPRESSIONS if query else SCAN_EXPRESSIONS
        self.attributes_to_get = attribute_names(body)
        if self.attributes_to_get is not None:
            refuse_mixed(body, "AttributesToGet", fields)  # a Query's KeyConditionExpression included
            distinct_names(self.attributes_to_get)
        self.exprs = Expressions(body, fields)
        self.projection = "ProjectionExpression" if body.get("ProjectionExpression") is not None else \
            "AttributesToGet" if self.attributes_to_get is not None else None

    def check_select(self) -> None:
        """Select against the projection asked for. DynamoDB checks it once the expressions parsed:
        for a Scan before the key rules, for a Query after every other fault (start key and filter
        included). ALL_PROJECTED_ATTRIBUTES needs an index, which Kynamo has none of yet."""
        if self.select == "SPECIFIC_ATTRIBUTES" and self.projection is None:
            raise ValidationException(
                "1 validation error detected: Value 'SPECIFIC_ATTRIBUTES' at 'select' failed to satisfy constraint: "
                "Select type SPECIFIC_ATTRIBUTES requires AttributesToGet or ProjectionExpression"
            )
        if self.select in ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "COUNT") and self.projection is not None:
            what = "only the Count" if self.select == "COUNT" else self.select
            raise ValidationException(f"Cannot specify the {self.projection} when choosing to get {what}")
        if self.select == "ALL_PROJECTED_ATTRIBUTES":
            raise ValidationException("ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName")

    def storage_body(self, filter_spec: Any, projection: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"consistent": self.consistent}
        if filter_spec is not None:
            doc["filter"] = filter_spec
        if projection is not None:
            doc["projection"] = projection
        elif self.attributes_to_get is not None:
            names = {f"#a{i}": n for i, n in enumerate(self.attributes_to_get)}
            doc["projection"] = [", ".join(names), names]
        return doc

    def response(self, router: Router, schema: KeySchema, items: list[Any], count: int, scanned: int,
                 last: bytes | None, rcu: float) -> dict[str, Any]:
        out: dict[str, Any] = {"Count": count, "ScannedCount": scanned}
        if self.select != "COUNT":
            out["Items"] = [item_to_wire(i) for i in items]
        if last is not None:
            out["LastEvaluatedKey"] = item_to_wire(keycodec.decode_position(schema, last))
        router.consume(self.table, "read", rcu)
        out.update(consumed(self.mode, self.table, rcu))
        return out


async def query(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    req = _Read(body, query=True)
    forward = boolean(body, "ScanIndexForward")
    forward = True if forward is None else forward
    kce = req.exprs.text("KeyConditionExpression")
    if kce is None:
        raise ValidationException("Either the KeyConditions or KeyConditionExpression parameter must be specified "
                                  "in the request.")
    flt = req.exprs.condition("FilterExpression")
    projection, _ = req.exprs.projection()
    # The key condition's own faults come after the filter's and projection's and before unused
    # names and values, as DynamoDB Local orders them; its key rules wait for the key schema.
    parsed_kce = req.exprs.key_condition_grammar(kce)
    req.exprs.finish()
    rt = await router.routing(req.table)
    await router.admit(req.table, "read")
    schema = rt.key_schema
    req.exprs.check_keys(schema.ordered_names())
    pk, sk = keycond.parse(kce, req.exprs.names, req.exprs.values, schema, parsed_kce)
    start = _start_key(schema, body)  # after the key condition's own errors, before the filter's
    prefix = keycodec.pk_prefix(pk)
    if start is not None:
        lo, hi = keycodec.sk_range(pk, sk)  # the positions the key condition selects, as the storage node reads
        if start < lo or (hi is not None and start >= hi):
            # DynamoDB Local's answer for a start key of another partition key too (dynalite's differs)
            raise ValidationException("The provided starting key does not match the range key predicate")
    req.exprs.check_filter_keys(schema.ordered_names())
    req.check_select()
    doc = req.storage_body(flt, projection)
    doc.update(pk=pk, sk=list(sk) if sk else None, forward=forward, limit=req.limit, start=start,
               max_bytes=PAGE_BYTES)
    prefix_end = keycodec.prefix_end(prefix)
    if start is not None:
        position = start
    elif forward:
        position = prefix
    else:
        last_part = rt.covering(prefix, prefix_end)[-1]
        position = max(last_part.start, prefix)
    items: list[Any] = []
    count = scanned = nbytes = 0
    last: bytes | None = None
    while True:
        # A split may cut one item collection: walk the partitions it spans, in query order.
        served: list[Any] = []

        async def go(client: Any, part: Any, body: dict[str, Any] = doc, served: list[Any] = served) -> Any:
            served.append(part)
            return await client.call("query", body, leader_only=req.consistent)

        page = await router.routed(req.table, position, go)
        items.extend(page.get("items") or [])
        count += int(page.get("count") or 0)
        scanned += int(page.get("scanned") or 0)
        nbytes += _page_bytes(page, req.consistent)
        last = page.get("last")
        part = served[-1]
        if last is not None:
            break
        if req.limit is not None and scanned >= req.limit:
            break
        if forward:
            if part.end is None or (prefix_end is not None and part.end >= prefix_end):
                break
            position = part.end
        else:
            if part.start <= prefix:
                break
            table = await router.routing(req.table)
            before = [p for p in table.partitions if p.end == part.start]
            if not before:
                break
            position = max(before[0].start, prefix)
        doc = {**doc, "start": None}
        if req.limit is not None:
            doc["limit"] = req.limit - scanned
    return req.response(router, schema, items, count, scanned, last, page_units(nbytes, req.consistent))


async def scan(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    req = _Read(body, query=False)
    segment = integer(body, "Segment", min_value=0, max_value=999999)
    total = integer(body, "TotalSegments", min_value=1, max_value=1000000)
    if segment is not None and total is None:
        raise ValidationException("The TotalSegments parameter is required but was not present in the request when "
                                  "Segment parameter is present")
    if total is not None and segment is None:
        raise ValidationException("The Segment parameter is required but was not present in the request when "
                                  "parameter TotalSegments is present")
    if segment is not None and total is not None and segment >= total:
        raise ValidationException(f"The Segment parameter is zero-based and must be less than parameter "
                                  f"TotalSegments: Segment: {segment} is out of bounds for TotalSegments: {total}")
    flt = req.exprs.condition("FilterExpression")
    projection, _ = req.exprs.projection()
    req.exprs.finish()
    req.check_select()
    rt = await router.routing(req.table)
    await router.admit(req.table, "read")
    schema = rt.key_schema
    start = _start_key(schema, body)  # a Scan's start key is checked before its expressions' key rules
    req.exprs.check_keys(schema.ordered_names())
    lo, hi = planner.segment_range(segment, total) if total else (b"", None)
    if start is not None and total is not None and total > 1 and not (lo <= start and (hi is None or start < hi)):
        raise ValidationException("The provided starting key is invalid: Invalid ExclusiveStartKey. Please use "
                                  f"ExclusiveStartKey with correct Segment. TotalSegments: {total} Segment: {segment}")
    base = req.storage_body(flt, projection)
    items: list[Any] = []
    count = scanned = nbytes = 0
    budget = PAGE_BYTES
    last: bytes | None = None
    for part in rt.covering(lo, hi):
        if start is not None and part.end is not None and start >= part.end:
            continue
        remaining = None if req.limit is None else req.limit - scanned
        doc = {
            **base,
            "range_start": max(lo, part.start),
            "range_end": hi if part.end is None else (part.end if hi is None else min(hi, part.end)),
            "limit": remaining,
            "start": start if start is not None and part.owns(start) else None,
            "max_bytes": max(budget, 1),
        }

        async def go(client: Any, doc: dict[str, Any] = doc) -> Any:
            return await client.call("scan", doc, leader_only=req.consistent)

        page = await router.on_partition(req.table, part, go)
        items.extend(page.get("items") or [])
        count += int(page.get("count") or 0)
        scanned += int(page.get("scanned") or 0)
        read = _page_bytes(page, req.consistent)
        nbytes += read
        budget -= read
        last = page.get("last")
        if last is not None:
            break
    return req.response(router, schema, items, count, scanned, last, page_units(nbytes, req.consistent))


def _page_bytes(page: dict[str, Any], consistent: bool) -> int:
    """Bytes a storage page read; from its units when a node predates reporting them."""
    if page.get("bytes") is not None:
        return int(page["bytes"])
    return int(float(page.get("rcu") or 0) * (4096 if consistent else 8192))
