"""BatchGetItem and BatchWriteItem: many keys, grouped by partition, fanned out at once.

A partition that cannot be reached in time does not fail the request: its keys
come back as UnprocessedKeys / UnprocessedItems for the SDK to retry, as
DynamoDB does under throttling or a partition failover.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from kynamo.router.attrs import _json_kind, check_item_size, item_from_wire, item_to_wire, key_from_wire, key_of_item
from kynamo.router.core import Router, check_result, read_units, write_units
from kynamo.router.exprs import Expressions, project, refuse_mixed
from kynamo.router.protocol import (
    DynamoError,
    ProvisionedThroughputExceededException,
    SerializationException,
    ServiceUnavailable,
    ValidationException,
)
from kynamo.router.validate import (
    array,
    attribute_names,
    boolean,
    check_table_name,
    constraint,
    distinct_names,
    mapping,
    return_consumed,
    structure,
)

from kynamo import keycodec
from kynamo.values import item_size

MAX_GET_KEYS = 100
MAX_WRITES = 25
DUPLICATES = "Provided list of item keys contains duplicates"


def _request_items(body: dict[str, Any]) -> dict[str, Any]:
    items = mapping(body, "RequestItems", required=True)
    assert items is not None
    if not items:
        raise constraint("{}", "requestItems", "Member must have length greater than or equal to 1")
    for name in items:
        check_table_name(name, "requestItems")
    return items


def _capacity(mode: str, per_table: dict[str, float]) -> dict[str, Any]:
    if mode == "NONE":
        return {}
    out = []
    for table, units in per_table.items():
        doc: dict[str, Any] = {"TableName": table, "CapacityUnits": units}
        if mode == "INDEXES":
            doc["Table"] = {"CapacityUnits": units}
        out.append(doc)
    return {"ConsumedCapacity": out}


async def batch_get_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    request = _request_items(body)
    mode = return_consumed(body)
    plans = []
    total = 0
    for table, spec in request.items():
        spec = structure(spec, "KeysAndAttributes")
        keys = array(spec, "Keys", required=True, path=f"requestItems.{table}.member.keys")
        assert keys is not None
        if not keys:
            raise constraint(
                "[]", f"requestItems.{table}.member.keys", "Member must have length greater than or equal to 1"
            )
        total += len(keys)
        if total > MAX_GET_KEYS:
            raise ValidationException("Too many items requested for the BatchGetItem call")
        consistent = bool(boolean(spec, "ConsistentRead"))
        attributes = attribute_names(spec, path=f"requestItems.{table}.member.attributesToGet")
        if attributes is not None:
            refuse_mixed(spec, "AttributesToGet", ("ProjectionExpression",))
            distinct_names(attributes)
        exprs = Expressions(spec, ("ProjectionExpression",))
        _, parsed = exprs.projection()
        exprs.finish()
        schema = await router.schema(table)
        exprs.check_keys(schema.ordered_names())
        await router.admit(table, "read")
        parsed_keys = [key_from_wire(schema, k) for k in keys]
        positions = [keycodec.position(schema, k) for k in parsed_keys]
        if len(set(positions)) != len(positions):
            raise ValidationException(DUPLICATES)
        plans.append((table, spec, consistent, parsed, attributes, list(zip(parsed_keys, positions, strict=True))))

    responses: dict[str, list[Any]] = {}
    unprocessed: dict[str, Any] = {}
    units: dict[str, float] = defaultdict(float)
    throttled: list[bytes] = []

    async def one(table: str, consistent: bool, key: dict[str, Any], pos: bytes) -> Any:
        async def go(client: Any, _part: Any) -> Any:
            return await client.call("get", {"key": key, "consistent": consistent}, leader_only=consistent)

        try:
            return await router.routed(table, pos, go)
        except ServiceUnavailable:
            return None
        except ProvisionedThroughputExceededException:  # the partition's bucket: the SDK retries it later
            throttled.append(pos)
            return None

    for table, spec, consistent, parsed, attributes, keyed in plans:
        results = await asyncio.gather(*(one(table, consistent, k, p) for k, p in keyed))
        found = responses.setdefault(table, [])
        for (key, _), doc in zip(keyed, results, strict=True):
            if doc is None:
                entry = unprocessed.setdefault(table, {**spec, "Keys": []})
                entry["Keys"].append(item_to_wire(key))
                continue
            item = doc.get("item")
            units[table] += read_units(item_size(item) if item else 0, consistent)
            if item is None:
                continue
            if parsed is not None:
                item = project(item, parsed)
            elif attributes is not None:
                item = {k: v for k, v in item.items() if k in set(map(str, attributes))}
            found.append(item_to_wire(item))
    if throttled and len(throttled) == sum(len(plan[5]) for plan in plans):
        raise ProvisionedThroughputExceededException()  # DynamoDB: nothing could be read for lack of throughput
    for table, u in units.items():
        router.consume(table, "read", u)
    return {"Responses": responses, "UnprocessedKeys": unprocessed, **_capacity(mode, units)}


def _write_request(schema: keycodec.KeySchema, req: Any) -> tuple[dict[str, Any], bytes, int, Any]:
    """(storage sub-command, position, size, the original request) of one WriteRequest."""
    req = structure(req, "WriteRequest")
    put, delete = req.get("PutRequest"), req.get("DeleteRequest")
    if (put is None) == (delete is None):
        # DynamoDB's message for a union with no member or two (dynalite's tests agree for none).
        raise ValidationException("Supplied AttributeValue has more than one datatypes set, must contain exactly one "
                                  "of the supported datatypes")
    if put is not None:
        put = structure(put, "PutRequest")
        item = item_from_wire(put.get("Item"), "Item")
        key = key_of_item(schema, item)
        size = check_item_size(item)
        return {"op": "put", "key": key, "item": item}, keycodec.position(schema, key), size, req
    delete = structure(delete, "DeleteRequest")
    key = key_from_wire(schema, delete.get("Key"))
    return {"op": "delete", "key": key}, keycodec.position(schema, key), 0, req


async def batch_write_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    request = _request_items(body)
    mode = return_consumed(body)
    for reqs in request.values():
        if not isinstance(reqs, list):
            raise SerializationException(f"{_json_kind(reqs)} cannot be converted to List")
    total = sum(len(v) for v in request.values())
    if total > MAX_WRITES or any(isinstance(v, list) and not v for v in request.values()):
        shown = json.dumps(request)[:200]
        raise constraint(shown, "requestItems", "Map value must satisfy constraint: [Member must have length less "
                         "than or equal to 25, Member must have length greater than or equal to 1]")
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], bytes, int, Any]]] = defaultdict(list)
    for table, reqs in request.items():
        if not isinstance(reqs, list):
            raise SerializationException(f"{_json_kind(reqs)} cannot be converted to List")
        schema = await router.schema(table)
        await router.admit(table, "write")
        seen: set[bytes] = set()
        parsed = [_write_request(schema, r) for r in reqs]
        for p in parsed:
            if p[1] in seen:
                raise ValidationException(DUPLICATES)
            seen.add(p[1])
        rt = await router.routing(table)
        for p in parsed:
            groups[(table, rt.lookup(p[1]).id)].append(p)

    unprocessed: dict[str, list[Any]] = {}
    units: dict[str, float] = defaultdict(float)
    throttled: list[int] = []

    async def flush(table: str, subs: list[tuple[dict[str, Any], bytes, int, Any]]) -> None:
        cmd = {"op": "batch", "ops": [s[0] for s in subs]}

        async def go(client: Any, _part: Any) -> Any:
            return await client.write(cmd)

        try:
            results = await router.routed(table, subs[0][1], go)
        except ServiceUnavailable:
            unprocessed.setdefault(table, []).extend(s[3] for s in subs)
            return
        except ProvisionedThroughputExceededException:  # the partition's bucket: the SDK retries it later
            unprocessed.setdefault(table, []).extend(s[3] for s in subs)
            throttled.append(len(subs))
            return
        for sub, result in zip(subs, results, strict=True):
            check_result(result, item_to_wire)
            units[table] += write_units(max(sub[2], int(result.get("old_size") or 0)))  # the larger item bills

    outcomes = await asyncio.gather(*(flush(t, subs) for (t, _), subs in groups.items()), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, DynamoError):
            raise outcome
        if isinstance(outcome, BaseException):
            raise outcome
    if throttled and sum(throttled) == sum(len(subs) for subs in groups.values()):
        raise ProvisionedThroughputExceededException()  # DynamoDB: nothing could be written for lack of throughput
    for table, u in units.items():
        router.consume(table, "write", u)
    return {"UnprocessedItems": unprocessed, **_capacity(mode, units)}
