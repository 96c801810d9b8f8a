"""Random hostile requests against a real `kynamo local`: every answer is a DynamoDB-shaped 200 or 4xx.

Each request is a valid one with one to three places replaced by a random JSON value (wrong types,
empty and oversize strings, malformed attribute values, numbers out of range, nesting past the
limit), an entry removed, or an unexpected field added. The answer must never be a 5xx or a
dropped connection, and every refusal carries `__type` and `message` as botocore parses them.
The hand-written cases are in test_router_hostile.py; this finds the combinations nobody wrote.

KYNAMO_FUZZ_SEED picks another sequence; KYNAMO_SOAK_SCALE scales the count (CI: 0.1, 1,500 requests).
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections import Counter
from typing import Any

import pytest
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.soak
REQUESTS = max(300, int(float(os.environ.get("KYNAMO_SOAK_SCALE", "1")) * 15_000))
SEED = int(os.environ.get("KYNAMO_FUZZ_SEED", "7"))
# DynamoDB's three namespaces for error types (botocore reads the name after '#')
PREFIXES = ("com.amazonaws.dynamodb.v20120810#", "com.amazon.coral.validate#", "com.amazon.coral.service#")

K1 = {"pk": {"S": "a"}}
K2 = {"pk": {"S": "a"}, "sk": {"N": "1"}}
ITEM = {"pk": {"S": "a"}, "sk": {"N": "1"}, "s": {"S": "x"}, "n": {"N": "5"}, "l": {"L": [{"S": "y"}, {"N": "2"}]},
        "m": {"M": {"k": {"BOOL": True}}}, "ss": {"SS": ["a", "b"]}, "b": {"B": "AAAA"}}
NAMES = {"#n": "n"}
TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("PutItem", {"TableName": "fuzz2", "Item": ITEM, "ConditionExpression": "attribute_not_exists(pk) OR #n > :v",
                 "ExpressionAttributeNames": NAMES, "ExpressionAttributeValues": {":v": {"N": "1"}},
                 "ReturnValues": "ALL_OLD", "ReturnConsumedCapacity": "TOTAL"}),
    ("GetItem", {"TableName": "fuzz2", "Key": K2, "ProjectionExpression": "#n, l[0], m.k",
                 "ExpressionAttributeNames": NAMES, "ConsistentRead": True}),
    ("UpdateItem", {"TableName": "fuzz2", "Key": K2,
                    "UpdateExpression": "SET #n = #n + :v, l = list_append(l, :l) REMOVE s ADD ss :ss",
                    "ExpressionAttributeNames": NAMES,
                    "ExpressionAttributeValues": {":v": {"N": "1"}, ":l": {"L": [{"S": "z"}]}, ":ss": {"SS": ["c"]}},
                    "ReturnValues": "UPDATED_NEW"}),
    ("DeleteItem", {"TableName": "fuzz2", "Key": K2, "ConditionExpression": "size(l) > :z",
                    "ExpressionAttributeValues": {":z": {"N": "0"}}, "ReturnValues": "ALL_OLD"}),
    ("Query", {"TableName": "fuzz2", "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
               "FilterExpression": "contains(ss, :c)", "Limit": 5, "ScanIndexForward": False,
               "ExpressionAttributeValues": {":p": {"S": "a"}, ":a": {"N": "0"}, ":b": {"N": "9"}, ":c": {"S": "a"}},
               "Select": "ALL_ATTRIBUTES", "ExclusiveStartKey": K2}),
    ("Scan", {"TableName": "fuzz2", "FilterExpression": "attribute_type(n, :t)",
              "ExpressionAttributeValues": {":t": {"S": "N"}}, "Segment": 0, "TotalSegments": 2, "Limit": 10,
              "ExclusiveStartKey": K2}),
    ("BatchGetItem", {"RequestItems": {"fuzz2": {"Keys": [K2, {"pk": {"S": "b"}, "sk": {"N": "2"}}],
                                                 "ProjectionExpression": "pk, sk, n", "ConsistentRead": True},
                                       "fuzz1": {"Keys": [K1]}}}),
    ("BatchWriteItem", {"RequestItems": {"fuzz2": [{"PutRequest": {"Item": ITEM}},
                                                   {"DeleteRequest": {"Key": {"pk": {"S": "c"}, "sk": {"N": "3"}}}}],
                                         "fuzz1": [{"PutRequest": {"Item": {"pk": {"S": "q"}}}}]},
                        "ReturnConsumedCapacity": "INDEXES"}),
    ("DescribeTable", {"TableName": "fuzz2"}),
    ("ListTables", {"Limit": 2, "ExclusiveStartTableName": "fuzz1"}),
    ("UpdateTable", {"TableName": "fuzz1", "BillingMode": "PROVISIONED",
                     "ProvisionedThroughput": {"ReadCapacityUnits": 5000, "WriteCapacityUnits": 5000}}),
    ("CreateTable", {"TableName": "fuzz3", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                     "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                     "BillingMode": "PAY_PER_REQUEST"}),
    ("DeleteTable", {"TableName": "fuzz3"}),
]
FIELDS = ["Extra", "Key", "Item", "TableName", "Limit", "Select", "AttributesToGet", "KeyConditions", "QueryFilter",
          "ScanFilter", "Expected", "ReturnValues", "ConsistentRead"]


def nested(r: random.Random) -> dict[str, Any]:
    v: dict[str, Any] = {"S": "x"}
    for _ in range(r.choice([31, 32, 33, 100, 5000])):
        v = {"M": {"m": v}} if r.random() < 0.5 else {"L": [v]}
    return v


def value(r: random.Random, depth: int = 0) -> Any:
    """A random JSON value, biased toward what DynamoDB's validation has to catch."""
    choices: list[Any] = [
        lambda: None,
        lambda: r.choice([True, False]),
        lambda: r.choice([0, -1, 1, 2**63, -(2**70), 10**40, 25, 101, 1001]),
        lambda: r.choice([1.5, -0.0, 1e308, 1e-320]),
        lambda: r.choice(["", " ", "x" * r.choice([1, 255, 256, 1025, 70_000]), "\u0000", "\ud7ff\uffff", "😀",
                          "ALL_OLD", "NONE", "TOTAL", "COUNT", "HASH", "S", "N", "1e126", "NaN", "-0", "AAAA", "=",
                          "#n", ":v"]),
        lambda: [] if depth > 2 else [value(r, depth + 1) for _ in range(r.randrange(3))],
        lambda: {} if depth > 2 else {r.choice(["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL", "x", ""]):
                                      value(r, depth + 1) for _ in range(r.randrange(3))},
        lambda: {"S": r.choice(["", "x", "a" * 2049])},
        lambda: {"N": r.choice(["", "1e126", "1e-131", "abc", "0x10", " 1", "1" * 39, "-0", "Infinity"])},
        lambda: {"B": r.choice(["", "!!", "AAA", "AAAA"])},
        lambda: {"SS": r.choice([[], ["a", "a"], [""], [1]])},
        lambda: {"NS": r.choice([[], ["1", "1.0"], ["x"]])},
        lambda: {"L": [value(r, depth + 1)] if depth < 3 else []},
        lambda: {"M": {"": {"S": "x"}}} if r.random() < 0.5 else {"M": {"k": value(r, depth + 1)} if depth < 3 else {}},
        lambda: nested(r),
        lambda: r.choice(["pk", "sk", {"NULL": True}, {"NULL": False}, {"BOOL": "true"}, {"S": "x", "N": "1"}]),
    ]
    return r.choice(choices)()


def places(obj: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at] if at else []
    if len(at) < 10:
        if isinstance(obj, dict):
            for k, v in obj.items():
                out += places(v, (*at, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                out += places(v, (*at, i))
    return out


def mutate(r: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        spots = places(body)
        if not spots:
            break
        at = r.choice(spots)
        parent: Any = body
        for k in at[:-1]:
            parent = parent[k]
        roll = r.random()
        if roll < 0.7:
            parent[at[-1]] = value(r)
        elif isinstance(parent, dict) and roll < 0.85:
            del parent[at[-1]]
        elif isinstance(parent, dict):
            parent[r.choice(FIELDS)] = value(r)
    return body


def test_random_hostile_requests_get_dynamodb_errors_never_a_500(kynamo: LocalKynamo, ddb: Any) -> None:  # noqa: F811
    make_table(ddb, "fuzz1", sk=None)
    make_table(ddb, "fuzz2", sk_type="N")
    r = random.Random(SEED)
    statuses: Counter[int] = Counter()
    types: Counter[str] = Counter()
    bad: list[str] = []
    for _ in range(REQUESTS):
        op, template = r.choice(TEMPLATES)
        body = mutate(r, template) if r.random() < 0.9 else template
        if r.random() < 0.05:  # the body of another item operation (another table operation could drop fuzz2)
            op = r.choice(["PutItem", "GetItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
                           "BatchWriteItem", "DescribeTable", "ListTables"])
        try:
            raw = json.dumps(body).encode()
        except (RecursionError, ValueError):
            continue  # deeper than json itself can write; test_router_hostile sends such bodies raw
        try:
            status, doc = kynamo.post(op, None, raw=raw)
        except OSError as exc:  # a dropped connection or a timeout: as bad as a 500
            bad.append(f"{op}: {exc!r} for {raw[:300]!r}")
            continue
        statuses[status // 100 * 100] += 1
        if status == 200:
            continue
        kind = str(doc.get("__type", ""))
        if status >= 500 or not kind.startswith(PREFIXES) or not isinstance(doc.get("message"), str):
            bad.append(f"{op}: HTTP {status} {doc!r:.200} for {raw[:300]!r}")
        types[kind.rpartition("#")[2]] += 1
    assert not bad, f"{len(bad)} of {REQUESTS} answered badly (seed {SEED}):\n" + "\n".join(bad[:10])
    # Neither a server refusing everything nor a generator producing only valid requests passes.
    assert statuses[200] >= REQUESTS // 50 and statuses[400] >= REQUESTS // 2, statuses
    assert {"ValidationException", "SerializationException"} <= set(types), types
    # The database still works: the table's item is readable and writable after all of it.
    ddb.put_item(TableName="fuzz2", Item={"pk": {"S": "after"}, "sk": {"N": "1"}})
    assert ddb.get_item(TableName="fuzz2", Key={"pk": {"S": "after"}, "sk": {"N": "1"}})["Item"]["pk"] == {"S": "after"}
