"""Pure parts of the router and control plane: planner, routing lookup, key conditions, values."""

from __future__ import annotations

import itertools
import json
import zlib

import pytest
from kynamo.router import attrs, keycond, protocol
from kynamo.router.protocol import DynamoError

from kynamo import keycodec, planner
from kynamo.keycodec import KeySchema
from kynamo.routing import RoutingTable

SCHEMA = KeySchema("pk", "S", "sk", "N")


# ------------------------------------------------------------------ planner

@pytest.mark.parametrize(
    ("mode", "rcu", "wcu", "n"),
    [
        ("PAY_PER_REQUEST", None, None, 1),
        ("PROVISIONED", 5, 5, 1),
        ("PROVISIONED", 3000, 1000, 1),
        ("PROVISIONED", 3001, 1, 2),
        ("PROVISIONED", 1, 3000, 3),
        ("PROVISIONED", 9000, 2500, 3),
    ],
)
def test_partition_count(mode: str, rcu: int | None, wcu: int | None, n: int) -> None:
    assert planner.partition_count(mode, rcu, wcu) == n


def test_plan_partitions_cover_the_space_one_replica_per_zone() -> None:
    zones = [["a:1:2"], ["b:1:2"], ["c:1:2"]]
    plan = planner.plan_partitions("t", "0123456789", 3, zones)
    assert plan[0]["start"] == "" and plan[-1]["end"] is None
    for left, right in itertools.pairwise(plan):
        assert left["end"] == right["start"]
    for p in plan:
        assert sorted(p["replicas"]) == ["a:1:2", "b:1:2", "c:1:2"]
        assert p["campaign"] in p["replicas"]
    assert len({p["campaign"] for p in plan}) == 3  # leaders spread over zones
    assert len({p["id"] for p in plan}) == 3


def test_new_tables_lead_where_fewest_groups_lead() -> None:
    """Tables created one after another spread their leaders over the nodes (they used to all lead on the
    first zone's member), and a table's own partitions still rotate."""
    zones = [["a:1:2"], ["b:1:2"], ["c:1:2"]]
    existing: list[dict] = []
    firsts = []
    for name in ("t1", "t2", "t3"):
        plan = planner.plan_partitions(name, "0123456789", 1, zones, leaders=planner.leader_counts(existing))
        firsts.append(plan[0]["campaign"])
        existing += plan
    assert sorted(firsts) == ["a:1:2", "b:1:2", "c:1:2"]
    # a known leader counts instead of the campaign slot it came from
    moved = [{**existing[0], "leader": "c:1:2"}, *existing[1:]]
    assert planner.leader_counts(moved) == {"b:1:2": 1, "c:1:2": 2}
    plan = planner.plan_partitions("t4", "0123456789", 2, zones, leaders=planner.leader_counts(moved))
    assert [p["campaign"] for p in plan] == ["a:1:2", "b:1:2"]


def test_plan_is_deterministic() -> None:
    zones = [["a:1:2", "d:1:2"], ["b:1:2"], ["c:1:2"]]
    assert planner.plan_partitions("t", "x" * 8, 4, zones) == planner.plan_partitions("t", "x" * 8, 4, zones)


def test_segment_ranges_tile_the_space() -> None:
    ranges = [planner.segment_range(i, 4) for i in range(4)]
    assert ranges[0][0] == b"" and ranges[-1][1] is None
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi == lo
    assert planner.segment_range(0, 1) == (b"", None)


# ------------------------------------------------------------------ routing

def _table(n: int) -> RoutingTable:
    plan = planner.plan_partitions("t", "abcdefgh", n, [["a:1:2"], ["b:1:2"], ["c:1:2"]])
    return RoutingTable.from_doc({"table": "t", "version": 1, "key_schema": SCHEMA.to_dict(), "partitions": plan})


def test_lookup_finds_the_owner_of_every_position() -> None:
    rt = _table(5)
    for i in range(200):
        pos = keycodec.position(SCHEMA, {"pk": {"S": f"k{i}"}, "sk": {"N": str(i)}})
        part = rt.lookup(pos)
        assert part.owns(pos)
        assert sum(p.owns(pos) for p in rt.partitions) == 1


def test_covering_and_round_trip() -> None:
    rt = _table(4)
    assert rt.covering(b"", None) == rt.partitions
    lo, hi = planner.segment_range(1, 4)
    assert rt.covering(lo, hi) == [rt.partitions[1]]
    assert RoutingTable.from_doc(rt.to_doc()).to_doc() == rt.to_doc()


# ------------------------------------------------------------------ key conditions

def _kc(expr: str, values: dict, names: dict | None = None) -> tuple:
    return keycond.parse(expr, names, values, SCHEMA)


P = {":p": {"S": "a"}}


@pytest.mark.parametrize(
    ("expr", "values", "sk"),
    [
        ("pk = :p", P, None),
        ("(pk = :p)", P, None),
        (":p = pk", P, None),
        ("pk = :p AND sk > :s", {**P, ":s": {"N": "1"}}, (">", {"N": "1"})),
        ("sk <= :s and pk = :p", {**P, ":s": {"N": "1"}}, ("<=", {"N": "1"})),
        (":s < sk AND pk = :p", {**P, ":s": {"N": "1"}}, (">", {"N": "1"})),
        ("pk = :p AND sk BETWEEN :a AND :b", {**P, ":a": {"N": "1"}, ":b": {"N": "2"}},
         ("between", {"N": "1"}, {"N": "2"})),
    ],
)
def test_key_conditions(expr: str, values: dict, sk: tuple | None) -> None:
    pk, got = _kc(expr, values)
    assert pk == {"S": "a"}
    assert got == sk


def test_key_condition_names_and_begins_with() -> None:
    schema = KeySchema("pk", "S", "sk", "S")
    _pk, sk = keycond.parse(
        "#p = :p AND begins_with(#s, :x)", {"#p": "pk", "#s": "sk"}, {":p": {"S": "a"}, ":x": {"S": "ab"}}, schema
    )
    assert sk == ("begins_with", {"S": "ab"})


@pytest.mark.parametrize(
    ("expr", "values", "fragment"),
    [
        ("", P, "can not be empty"),
        ("sk = :s", {":s": {"N": "1"}}, "missed key schema element: pk"),
        ("pk = :p OR pk = :p", P, "Invalid operator"),
        ("pk < :p", P, "not supported"),
        ("pk = :q", P, "not defined"),
        ("pk = :p AND sk = :p", P, "does not match schema type"),
        ("pk = :p AND begins_with(sk, :s)", {**P, ":s": {"N": "1"}}, "begins_with"),
        ("pk = :p AND sk BETWEEN :b AND :a", {**P, ":a": {"N": "1"}, ":b": {"N": "2"}}, "BETWEEN"),
        ("pk = :p AND", P, "Syntax error"),
        ("pk = :p AND x = :p", P, "missed key schema element"),
        ("pk = :p AND sk > :s AND sk < :s", {**P, ":s": {"N": "1"}}, "only contain one condition per key"),
        ("pk $ :p", P, 'Syntax error; token: "$"'),
        ("pk = :p AND foo(sk, :p)", P, "Invalid function name"),
    ],
)
def test_key_condition_errors(expr: str, values: dict, fragment: str) -> None:
    with pytest.raises(DynamoError) as err:
        _kc(expr, values)
    assert err.value.type_name == "ValidationException"
    assert fragment in err.value.message


# ------------------------------------------------------------------ values at the edge

def test_item_from_wire_normalises_and_decodes() -> None:
    item = attrs.item_from_wire({"n": {"N": "1.50"}, "b": {"B": "AAE="}, "l": {"L": [{"NS": ["1", "2.0"]}]}})
    assert item == {"n": {"N": "1.5"}, "b": {"B": b"\x00\x01"}, "l": {"L": [{"NS": ["1", "2"]}]}}
    assert attrs.item_to_wire(item)["b"] == {"B": "AAE="}


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        ({"a": {"S": 1}}, "SerializationException"),
        ({"a": {"N": "abc"}}, "ValidationException"),
        ({"a": {}}, "ValidationException"),
        ({"a": {"S": "x", "N": "1"}}, "ValidationException"),
        ({"a": {"SS": []}}, "ValidationException"),
        ({"a": {"SS": ["x", "x"]}}, "ValidationException"),
        ({"a": {"NS": ["1", "1.0"]}}, "ValidationException"),
        ({"a": {"NULL": False}}, "ValidationException"),
        ({"a": {"B": "!!!"}}, "SerializationException"),
        ({"a": {"N": "1e999"}}, "ValidationException"),
        ({"a": "x"}, "SerializationException"),
    ],
)
def test_bad_values(doc: dict, kind: str) -> None:
    with pytest.raises(DynamoError) as err:
        attrs.item_from_wire(doc)
    assert err.value.type_name == kind


def test_nesting_limit() -> None:
    v: dict = {"S": "x"}
    for _ in range(31):
        v = {"L": [v]}
    attrs.item_from_wire({"a": v})  # 32 levels is allowed
    with pytest.raises(DynamoError, match="Nesting Levels"):
        attrs.item_from_wire({"a": {"L": [v]}})


def test_keys() -> None:
    assert attrs.key_from_wire(SCHEMA, {"pk": {"S": "a"}, "sk": {"N": "1"}}) == {"pk": {"S": "a"}, "sk": {"N": "1"}}
    for bad in ({"pk": {"S": "a"}}, {"pk": {"N": "1"}, "sk": {"N": "1"}},
                {"pk": {"S": "a"}, "sk": {"N": "1"}, "x": {"S": "y"}}):
        with pytest.raises(DynamoError, match="does not match the schema"):
            attrs.key_from_wire(SCHEMA, bad)
    with pytest.raises(DynamoError, match="empty string"):
        attrs.key_from_wire(SCHEMA, {"pk": {"S": ""}, "sk": {"N": "1"}})
    with pytest.raises(DynamoError, match="Missing the key sk"):
        attrs.key_of_item(SCHEMA, {"pk": {"S": "a"}})
    with pytest.raises(DynamoError, match="Type mismatch for key sk expected: N actual: S"):
        attrs.key_of_item(SCHEMA, {"pk": {"S": "a"}, "sk": {"S": "1"}})
    with pytest.raises(DynamoError, match="hashkey"):
        attrs.key_of_item(SCHEMA, {"pk": {"S": "a" * 2049}, "sk": {"N": "1"}})


# ------------------------------------------------------------------ protocol

def test_response_carries_crc32_and_request_id() -> None:
    resp = protocol.json_response({"a": 1})
    assert resp.headers["x-amz-crc32"] == str(zlib.crc32(resp.body))
    assert resp.headers["x-amzn-RequestId"]
    err = protocol.error_response(protocol.ResourceNotFoundException())
    doc = json.loads(err.body)
    assert err.status == 400
    assert doc["__type"].endswith("#ResourceNotFoundException")


@pytest.mark.parametrize("raw", [b"{", b"[1]", b"\xff\xfe", b"nan", b'{"a": NaN}', b"[" * 100000])
def test_bad_bodies_are_serialization_errors(raw: bytes) -> None:
    with pytest.raises(protocol.SerializationException):
        protocol.decode_body(raw)


def test_unknown_target() -> None:
    with pytest.raises(protocol.UnknownOperationException):
        protocol.operation_of("Foo.Bar")
    assert protocol.operation_of("DynamoDB_20120810.PutItem") == "PutItem"


@pytest.mark.parametrize(
    ("expr", "values", "fragment"),
    [
        ("pk = :p AND sk = :p", P, "does not match schema type"),
        ("pk = :s", {":s": {"N": "1"}}, "does not match schema type"),
        ("pk = :p AND sk BETWEEN :b AND :a", {**P, ":a": {"N": "1"}, ":b": {"N": "2"}}, "BETWEEN"),
        ("sk = :s", {":s": {"N": "1"}}, "missed key schema element: pk"),
        ("pk = :p OR pk = :p", P, "Invalid operator"),
    ],
)
def test_shared_key_condition_parser_with_type_checks(expr: str, values: dict, fragment: str) -> None:
    with pytest.raises(DynamoError) as err:
        keycond.parse(expr, None, values, SCHEMA)
    assert fragment in err.value.message


def test_shared_key_condition_parser() -> None:
    pk, sk = keycond.parse("#p = :p AND sk >= :s", {"#p": "pk"}, {**P, ":s": {"N": "3"}}, SCHEMA)
    assert pk == {"S": "a"} and sk == (">=", {"N": "3"})


# ------------------------------------------------------------------ admission control

def test_admission_burst_then_refill() -> None:
    from kynamo.router.admission import Admission
    from kynamo.router.protocol import ProvisionedThroughputExceededException

    now = [0.0]
    import asyncio

    adm = Admission(clock=lambda: now[0])
    meta = {"name": "t", "id": "1", "billing_mode": "PROVISIONED", "rcu": 2, "wcu": 1}
    asyncio.run(adm.admit(meta, "write"))
    adm.charge(meta, "write", 300)  # the whole 300-second burst at once
    with pytest.raises(ProvisionedThroughputExceededException):
        asyncio.run(adm.admit(meta, "write"))
    asyncio.run(adm.admit(meta, "read"))  # reads have their own bucket
    now[0] += 1.5
    asyncio.run(adm.admit(meta, "write"))  # refilled at 1 WCU/s
    adm.charge(meta, "write", 400)
    now[0] += 50
    with pytest.raises(ProvisionedThroughputExceededException):
        asyncio.run(adm.admit(meta, "write"))
    meta["wcu"] = 100  # UpdateTable raised the rate: the debt is paid back 100 times faster
    adm.charge(meta, "write", 0)
    now[0] += 4
    asyncio.run(adm.admit(meta, "write"))
    on_demand = {"name": "o", "id": "2", "billing_mode": "PAY_PER_REQUEST", "rcu": 0, "wcu": 0}
    adm.charge(on_demand, "write", 10**9)
    asyncio.run(adm.admit(on_demand, "write"))
