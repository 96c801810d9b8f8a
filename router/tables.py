"""Control operations: CreateTable, DescribeTable, ListTables, DeleteTable, UpdateTable.

The router validates the request as DynamoDB does and renders the
TableDescription; the control plane owns the table's lifecycle.
"""

from __future__ import annotations

import time
from typing import Any

from kynamo.router.core import Router
from kynamo.router.protocol import (
    DynamoError,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from kynamo.router.validate import (
    array,
    boolean,
    check_table_name,
    constraint,
    integer,
    mapping,
    string,
    structure,
    table_name,
)

from kynamo.control_local import ControlError

INVALID = "One or more parameter values were invalid: "
MAX_TABLE_UNITS = 40000


def _control_error(err: ControlError) -> DynamoError:
    kinds: dict[str, type[DynamoError]] = {
        "ResourceNotFoundException": ResourceNotFoundException,
        "ResourceInUseException": ResourceInUseException,
        "LimitExceededException": LimitExceededException,
    }
    return kinds.get(err.kind, ValidationException)(err.message)


def _throughput(body: dict[str, Any]) -> tuple[int, int] | None:
    pt = mapping(body, "ProvisionedThroughput")
    if pt is None:
        return None
    rcu = integer(pt, "ReadCapacityUnits", required=True, min_value=1, path="provisionedThroughput.readCapacityUnits",
                  java_type="Long")
    wcu = integer(pt, "WriteCapacityUnits", required=True, min_value=1, path="provisionedThroughput.writeCapacityUnits",
                  java_type="Long")
    assert rcu is not None and wcu is not None
    for value, what in ((rcu, "ReadCapacityUnits"), (wcu, "WriteCapacityUnits")):
        if value > MAX_TABLE_UNITS:
            raise LimitExceededException(
                f"Subscriber limit exceeded: Provisioned throughput for a single table cannot exceed "
                f"{MAX_TABLE_UNITS} {what}"
            )
    return rcu, wcu


def _key_schema(body: dict[str, Any]) -> list[dict[str, str]]:
    ks = array(body, "KeySchema", required=True)
    assert ks is not None
    if not ks:
        raise constraint("[]", "keySchema", "Member must have length greater than or equal to 1")
    if len(ks) > 2:
        raise constraint(ks, "keySchema", "Member must have length less than or equal to 2")
    out = []
    for i, el in enumerate(ks, 1):
        el = structure(el, "KeySchemaElement")
        name = string(el, "AttributeName", required=True, min_len=1, max_len=255,
                      path=f"keySchema.{i}.member.attributeName")
        kind = string(el, "KeyType", required=True, enum=("HASH", "RANGE"), path=f"keySchema.{i}.member.keyType")
        out.append({"AttributeName": name, "KeyType": kind})
    if out[0]["KeyType"] != "HASH":
        raise ValidationException("Invalid KeySchema: The first KeySchemaElement is not a HASH key type")
    if len(out) == 2:
        if out[1]["KeyType"] != "RANGE":
            raise ValidationException("Invalid KeySchema: The second KeySchemaElement is not a RANGE key type")
        if out[0]["AttributeName"] == out[1]["AttributeName"]:
            raise ValidationException("Both the Hash Key and the Range Key element in the KeySchema have the same name")
    return out


def _attribute_definitions(body: dict[str, Any]) -> list[dict[str, str]]:
    defs = array(body, "AttributeDefinitions", required=True)
    assert defs is not None
    out = []
    for i, el in enumerate(defs, 1):
        el = structure(el, "AttributeDefinition")
        name = string(el, "AttributeName", required=True, min_len=1, max_len=255,
                      path=f"attributeDefinitions.{i}.member.attributeName")
        kind = string(el, "AttributeType", required=True, enum=("B", "N", "S"),
                      path=f"attributeDefinitions.{i}.member.attributeType")
        out.append({"AttributeName": name, "AttributeType": kind})
    names = [d["AttributeName"] for d in out]
    if len(set(names)) != len(names):
        raise ValidationException("Cannot have two attributes with the same name")
    return out


def _dump(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def validate_create(body: dict[str, Any]) -> dict[str, Any]:
    """The control plane's table spec from a CreateTable request, or DynamoDB's error."""
    name = table_name(body)
    defs = _attribute_definitions(body)
    ks = _key_schema(body)
    billing = string(body, "BillingMode", enum=("PROVISIONED", "PAY_PER_REQUEST")) or "PROVISIONED"
    throughput = _throughput(body)
    if billing == "PAY_PER_REQUEST" and throughput is not None:
        raise ValidationException(
            INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is "
            "PAY_PER_REQUEST"
        )
    if billing == "PROVISIONED" and throughput is None:
        raise ValidationException(
            INVALID + "ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED"
        )
    for unsupported in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if body.get(unsupported):
            raise ValidationException(f"Kynamo does not support {unsupported} yet")
    key_names = sorted({k["AttributeName"] for k in ks})
    def_names = sorted(d["AttributeName"] for d in defs)
    if def_names != key_names:
        if len(def_names) > len(key_names):
            raise ValidationException(
                INVALID + "Number of attributes in KeySchema does not exactly match number of attributes defined "
                "in AttributeDefinitions"
            )
        if len(def_names) < len(key_names):
            raise ValidationException("Invalid KeySchema: Some index key attribute have no definition")
        raise ValidationException(
            INVALID + f"Some index key attributes are not defined in AttributeDefinitions. Keys: {_dump(key_names)}, "
            f"AttributeDefinitions: {_dump(def_names)}"
        )
    types = {d["AttributeName"]: d["AttributeType"] for d in defs}
    pk = ks[0]["AttributeName"]
    sk = ks[1]["AttributeName"] if len(ks) == 2 else None
    protection = boolean(body, "DeletionProtectionEnabled") or False
    mapping(body, "StreamSpecification")
    mapping(body, "SSESpecification")
    array(body, "Tags")
    return {
        "name": name,
        "key_schema": {"pk": pk, "pk_type": types[pk], "sk": sk, "sk_type": types[sk] if sk else None},
        "key_schema_doc": ks,
        "attribute_definitions": defs,
        "billing_mode": billing,
        "rcu": throughput[0] if throughput else 0,
        "wcu": throughput[1] if throughput else 0,
        "deletion_protection": protection,
    }


async def describe(router: Router, meta: dict[str, Any], *, stats: bool = True) -> dict[str, Any]:
    name = meta["name"]
    count, size = await router.control.stats(name) if stats and meta["status"] == "ACTIVE" else (0, 0)
    pt: dict[str, Any] = {
        "NumberOfDecreasesToday": int(meta.get("decreases_today") or 0),
        "ReadCapacityUnits": int(meta.get("rcu") or 0),
        "WriteCapacityUnits": int(meta.get("wcu") or 0),
    }
    if meta.get("last_increase"):
        pt["LastIncreaseDateTime"] = meta["last_increase"]
    if meta.get("last_decrease"):
        pt["LastDecreaseDateTime"] = meta["last_decrease"]
    doc: dict[str, Any] = {
        "AttributeDefinitions": meta["attribute_definitions"],
        "TableName": name,
        "KeySchema": meta["key_schema_doc"],
        "TableStatus": meta["status"],
        "CreationDateTime": meta["created"],
        "ProvisionedThroughput": pt,
        "TableSizeBytes": size,
        "ItemCount": count,
        "TableArn": router.control.arn(name),
        "TableId": meta["id"],
        "DeletionProtectionEnabled": bool(meta.get("deletion_protection")),
    }
    if meta["billing_mode"] == "PAY_PER_REQUEST":
        doc["BillingModeSummary"] = {
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": meta.get("ppr_since") or meta["created"],
        }
    else:
        doc["BillingModeSummary"] = {"BillingMode": "PROVISIONED"}
    return doc


def _existing(router: Router, name: str) -> dict[str, Any]:
    meta = router.control.get(name)
    if meta is None:
        raise ResourceNotFoundException(f"Requested resource not found: Table: {name} not found")
    return meta


async def create_table(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    spec = validate_create(body)
    try:
        meta = await router.control.create_table(spec)
    except ControlError as err:
        raise _control_error(err) from None
    return {"TableDescription": await describe(router, meta, stats=False)}


async def describe_table(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    name = table_name(body)
    return {"Table": await describe(router, _existing(router, name))}


async def delete_table(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    name = table_name(body)
    meta = _existing(router, name)
    if meta.get("deletion_protection"):
        raise ValidationException(
            "Resource cannot be deleted as it is currently protected against deletion. "
            "Disable deletion protection first."
        )
    try:
        meta = await router.control.delete_table(name)
    except ControlError as err:
        raise _control_error(err) from None
    router.routes.forget(name)
    return {"TableDescription": await describe(router, meta, stats=False)}


async def list_tables(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    start = string(body, "ExclusiveStartTableName")
    if start is not None:
        check_table_name(start, "exclusiveStartTableName")
    limit = integer(body, "Limit", min_value=1, max_value=100) or 100
    names = router.control.names()
    if start is not None:
        names = [n for n in names if n > start]
    page = names[:limit]
    out: dict[str, Any] = {"TableNames": page}
    if len(names) > limit:
        out["LastEvaluatedTableName"] = page[-1]
    return out


async def update_table(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    name = table_name(body)
    billing = string(body, "BillingMode", enum=("PROVISIONED", "PAY_PER_REQUEST"))
    throughput = _throughput(body)
    protection = boolean(body, "DeletionProtectionEnabled")
    if body.get("GlobalSecondaryIndexUpdates"):
        raise ValidationException("Kynamo does not support GlobalSecondaryIndexes yet")
    meta = _existing(router, name)
    if billing is None and throughput is None and protection is None and not body.get("StreamSpecification") \
            and not body.get("SSESpecification"):
        raise ValidationException(
            "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates "
            "or SSESpecification or ReplicaUpdates is required"
        )
    mode = billing or meta["billing_mode"]
    changes: dict[str, Any] = {}
    if protection is not None:
        changes["deletion_protection"] = protection
    if mode == "PAY_PER_REQUEST":
        if throughput is not None:
            raise ValidationException(
                INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is "
                "PAY_PER_REQUEST"
            )
        if meta["billing_mode"] != "PAY_PER_REQUEST":
            changes.update(billing_mode="PAY_PER_REQUEST", rcu=0, wcu=0, ppr_since=time.time())
    else:
        if throughput is None and meta["billing_mode"] != "PROVISIONED":
            raise ValidationException(
                INVALID + "ProvisionedThroughput must be specified when BillingMode is PROVISIONED"
            )
        if throughput is not None:
            rcu, wcu = throughput
            if meta["billing_mode"] == "PROVISIONED" and (rcu, wcu) == (meta.get("rcu"), meta.get("wcu")) \
                    and billing is None and protection is None:
                raise ValidationException(
                    "The provisioned throughput for the table will not change. The requested value equals the "
                    f"current value. Current ReadCapacityUnits provisioned for the table: {rcu}. Requested "
                    f"ReadCapacityUnits: {rcu}. Current WriteCapacityUnits provisioned for the table: {wcu}. "
                    f"Requested WriteCapacityUnits: {wcu}. Refer to the Amazon DynamoDB Developer Guide for current "
                    "limits and how to increase them."
                )
            changes.update(billing_mode="PROVISIONED", rcu=rcu, wcu=wcu)
    try:
        meta = await router.control.update_table(name, changes)
    except ControlError as err:
        raise _control_error(err) from None
    return {"TableDescription": await describe(router, meta)}
