"""Table spec checks the OpenAPI schema cannot state (the CRD's CEL rules), plus defaults.

The API server enforces the CEL rules; the operator checks again because a CRD installed
without them (an old apiserver, or a test emulator) must still never yield a broken table.
"""

from __future__ import annotations

from typing import Any

from kynamo.keycodec import KeySchema

DEFAULT_REPLICAS = 3
DEFAULT_SIZE = "10Gi"


def table_spec_errors(spec: dict[str, Any]) -> list[str]:
    """Everything wrong with a Table spec, in words a user can act on (empty: valid)."""
    errs: list[str] = []
    attrs = {a.get("attributeName"): a.get("attributeType") for a in spec.get("attributeDefinitions") or []}
    keys = spec.get("keySchema") or []
    if not keys:
        errs.append("keySchema is required")
    elif keys[0].get("keyType") != "HASH" or len(keys) > 2 or (len(keys) == 2 and keys[1].get("keyType") != "RANGE"):
        errs.append("keySchema is one HASH key, then optionally one RANGE key")
    for k in keys:
        if k.get("attributeName") not in attrs:
            errs.append(f"keySchema attribute {k.get('attributeName')!r} is not in attributeDefinitions")
    for name, typ in attrs.items():
        if typ not in ("S", "N", "B"):
            errs.append(f"attribute {name!r} has type {typ!r}: must be S, N or B")
    if len(attrs) != len(keys):
        errs.append("attributeDefinitions must define exactly the key attributes")
    mode = spec.get("billingMode")
    if mode not in ("PROVISIONED", "PAY_PER_REQUEST"):
        errs.append("billingMode must be PROVISIONED or PAY_PER_REQUEST")
    if mode == "PROVISIONED":
        pt = spec.get("provisionedThroughput") or {}
        for f in ("readCapacityUnits", "writeCapacityUnits"):
            v = pt.get(f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errs.append(f"provisionedThroughput.{f} must be a positive integer when billingMode is PROVISIONED")
    replicas = spec.get("replicasPerPartition", DEFAULT_REPLICAS)
    if not isinstance(replicas, int) or not 1 <= replicas <= 7:
        errs.append("replicasPerPartition must be 1..7")
    zones = spec.get("zones")
    if zones is not None and isinstance(replicas, int) and len(set(zones)) < replicas:
        errs.append(f"zones lists {len(set(zones))} distinct zones; {replicas} replicas need one zone each")
    return errs


def key_schema(spec: dict[str, Any]) -> KeySchema:
    """The router's key schema from a (valid) Table spec."""
    types = {a["attributeName"]: a["attributeType"] for a in spec["attributeDefinitions"]}
    keys = spec["keySchema"]
    pk = keys[0]["attributeName"]
    sk = keys[1]["attributeName"] if len(keys) > 1 else None
    return KeySchema(pk, types[pk], sk, types[sk] if sk else None)


def table_name(body: dict[str, Any]) -> str:
    """The DynamoDB name SDKs use: spec.tableName, else the resource's name."""
    return body.get("spec", {}).get("tableName") or body["metadata"]["name"]
