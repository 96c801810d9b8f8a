"""Pure parts of the Kubernetes routing source: names, Table <-> table metadata."""

from __future__ import annotations

import re

from kynamo.router.k8s_routing import A_PROTECTION, meta_of, resource_name, table_resource

SPEC = {
    "name": "Orders_2024", "key_schema": {"pk": "id", "pk_type": "S", "sk": "at", "sk_type": "N"},
    "key_schema_doc": [{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}],
    "attribute_definitions": [{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "at", "AttributeType": "N"}],
    "billing_mode": "PROVISIONED", "rcu": 5, "wcu": 7, "deletion_protection": True,
}


def test_resource_names_are_dns_names_and_distinct():
    assert resource_name("orders") == "orders"
    names = {resource_name(n) for n in ("Orders", "orders_", "ORDERS", "a.b", "x" * 255, "__")}
    assert len(names) == 6
    for n in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) and len(n) <= 63, n


def test_create_spec_round_trips_through_a_table_resource():
    obj = table_resource(SPEC, "ns")
    assert obj["metadata"]["name"] == resource_name("Orders_2024")
    assert obj["metadata"]["annotations"] == {A_PROTECTION: "true"}
    assert obj["spec"]["provisionedThroughput"] == {"readCapacityUnits": 5, "writeCapacityUnits": 7}
    obj["metadata"].update(uid="u1", creationTimestamp="2026-01-02T03:04:05Z")
    meta = meta_of(obj, has_routing=False)
    for key in ("name", "key_schema", "key_schema_doc", "attribute_definitions", "billing_mode", "rcu", "wcu",
                "deletion_protection"):
        assert meta[key] == SPEC[key], key
    assert meta["status"] == "CREATING" and meta["id"] == "u1" and meta["created"] == 1767323045.0


def test_status_comes_from_the_phase_or_the_routing_or_the_deletion():
    obj = table_resource({**SPEC, "billing_mode": "PAY_PER_REQUEST", "deletion_protection": False}, "ns")
    assert "provisionedThroughput" not in obj["spec"]
    assert meta_of(obj, has_routing=True)["status"] == "ACTIVE"  # hand-written Table without a status
    obj["status"] = {"phase": "UPDATING", "tableId": "t-1", "routingVersion": 4}
    meta = meta_of(obj, has_routing=True)
    assert (meta["status"], meta["id"], meta["version"], meta["rcu"]) == ("UPDATING", "t-1", 4, 0)
    obj["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    assert meta_of(obj, has_routing=True)["status"] == "DELETING"


def test_the_recorded_on_demand_peak_reaches_the_router():
    """The operator records an on-demand table's peak in its status; routers hand it to the GAC."""
    obj = table_resource({**SPEC, "billing_mode": "PAY_PER_REQUEST", "deletion_protection": False}, "ns")
    assert meta_of(obj, has_routing=True)["peak"] == [0.0, 0.0]
    obj["status"] = {"phase": "ACTIVE", "peak": {"rcu": 120.5, "wcu": 40}}
    assert meta_of(obj, has_routing=True)["peak"] == [120.5, 40.0]
