"""Single-item operations: PutItem, GetItem, UpdateItem, DeleteItem.

The router validates and routes; the condition and the update are evaluated by
the partition leader as part of the replicated command, so they are atomic.
"""

from __future__ import annotations

from typing import Any

from kynamo.router.attrs import check_item_size, item_from_wire, item_to_wire, key_from_wire, key_of_item
from kynamo.router.core import Router, check_result, consumed, position, read_units, write_units
from kynamo.router.exprs import Expressions, project, refuse_mixed
from kynamo.router.validate import (
    attribute_names,
    boolean,
    distinct_names,
    reject_legacy,
    return_consumed,
    return_on_ccf,
    return_values,
    table_name,
)

from kynamo.values import item_size

LEGACY_WRITE = ("Expected", "ConditionalOperator")


def _attrs_out(doc: dict[str, Any], attrs: dict[str, Any] | None) -> dict[str, Any]:
    if attrs:
        doc["Attributes"] = item_to_wire(attrs)
    return doc


async def _write(router: Router, table: str, schema: Any, key: dict[str, Any], cmd: dict[str, Any]) -> Any:
    await router.admit(table, "write")

    async def go(client: Any, _part: Any) -> Any:
        return await client.write(cmd, timeout=router.deadline)

    return await router.routed(table, position(schema, key), go, bounded=True)


def _write_capacity(router: Router, body: dict[str, Any], table: str, size: int) -> dict[str, Any]:
    units = write_units(size)
    router.consume(table, "write", units)
    return consumed(return_consumed(body), table, units)


async def put_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    table = table_name(body)
    item = item_from_wire(body.get("Item"), "Item")
    rv = return_values(body, ("NONE", "ALL_OLD"))
    rcq = return_on_ccf(body)
    return_consumed(body)
    reject_legacy(body, *LEGACY_WRITE)
    exprs = Expressions(body, ("ConditionExpression",))
    cond = exprs.condition()
    exprs.finish()
    schema = await router.schema(table)
    exprs.check_keys(schema.ordered_names())
    key = key_of_item(schema, item)
    size = check_item_size(item)
    cmd = {"op": "put", "key": key, "item": item, "cond": cond, "rv": rv, "rcq": rcq}
    result = await _write(router, table, schema, key, cmd)
    attrs = check_result(result, item_to_wire)
    billed = max(size, int(result.get("old_size") or 0), item_size(attrs) if attrs else 0)  # the larger item bills
    return _attrs_out(_write_capacity(router, body, table, billed), attrs)


async def delete_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    table = table_name(body)
    rv = return_values(body, ("NONE", "ALL_OLD"))
    rcq = return_on_ccf(body)
    return_consumed(body)
    reject_legacy(body, *LEGACY_WRITE)
    exprs = Expressions(body, ("ConditionExpression",))
    cond = exprs.condition()
    exprs.finish()
    schema = await router.schema(table)
    exprs.check_keys(schema.ordered_names())
    key = key_from_wire(schema, body.get("Key"))
    cmd = {"op": "delete", "key": key, "cond": cond, "rv": "ALL_OLD", "rcq": rcq}
    result = await _write(router, table, schema, key, cmd)
    old = check_result(result, item_to_wire)
    size = int(result.get("old_size") or 0) or (item_size(old) if old else 0)
    return _attrs_out(_write_capacity(router, body, table, size), old if rv == "ALL_OLD" else None)


async def update_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    table = table_name(body)
    rv = return_values(body, ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"))
    rcq = return_on_ccf(body)
    return_consumed(body)
    reject_legacy(body, *LEGACY_WRITE, "AttributeUpdates")
    exprs = Expressions(body, ("UpdateExpression", "ConditionExpression"))
    update = exprs.update()
    cond = exprs.condition()
    exprs.finish()
    schema = await router.schema(table)
    exprs.check_keys(schema.ordered_names())
    key = key_from_wire(schema, body.get("Key"))
    cmd = {"op": "update", "key": key, "update": update, "cond": cond, "rv": rv, "rcq": rcq}
    result = await _write(router, table, schema, key, cmd)
    attrs = check_result(result, item_to_wire)
    # The larger of the item before and after bills (the leader reports both sizes).
    size = max(int(result.get("old_size") or 0), int(result.get("new_size") or 0))
    return _attrs_out(_write_capacity(router, body, table, size), None if rv == "NONE" else attrs)


async def get_item(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    table = table_name(body)
    consistent = bool(boolean(body, "ConsistentRead"))
    mode = return_consumed(body)
    exprs = Expressions(body, ("ProjectionExpression",))
    attributes_to_get = attribute_names(body)
    if attributes_to_get is not None:
        refuse_mixed(body, "AttributesToGet", ("ProjectionExpression",))  # before the projection parses
        distinct_names(attributes_to_get)
    _, parsed = exprs.projection()
    exprs.finish()
    schema = await router.schema(table)
    exprs.check_keys(schema.ordered_names())
    key = key_from_wire(schema, body.get("Key"))

    async def go(client: Any, _part: Any) -> Any:
        return await client.read(key, consistent=consistent, timeout=router.deadline)

    await router.admit(table, "read")
    doc = await router.routed(table, position(schema, key), go, bounded=True)
    item = doc.get("item")
    units = read_units(item_size(item) if item else 0, consistent)
    router.consume(table, "read", units)
    out = consumed(mode, table, units)
    if item is not None:
        if parsed is not None:
            item = project(item, parsed)
        elif attributes_to_get is not None:
            item = {k: v for k, v in item.items() if k in set(attributes_to_get)}
        out["Item"] = item_to_wire(item)
    return out
