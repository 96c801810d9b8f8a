"""Malformed and hostile requests, sent raw: each gets its DynamoDB error, never a 500 or a hang.

boto3 validates parameters on the client side, so these go through plain HTTP
the way a broken or malicious client would send them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from router_env import LocalKynamo, ddb, error_type, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "hostile"
KEY = {"pk": {"S": "a"}, "sk": {"N": "1"}}
V = "ValidationException"
S = "SerializationException"
NF = "ResourceNotFoundException"


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    make_table(ddb, T, sk_type="N")
    ddb.put_item(TableName=T, Item={**KEY, "s": {"S": "text"}, "n": {"N": "5"}})
    return T


def nest(depth: int) -> dict[str, Any]:
    v: dict[str, Any] = {"S": "x"}
    for _ in range(depth - 1):
        v = {"M": {"m": v}}
    return v


def put(item: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    return "PutItem", {"TableName": T, "Item": item, **extra}


def put_attr(value: Any) -> tuple[str, dict[str, Any]]:
    return put({**KEY, "a": value})


def update(expr: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return "UpdateItem", {"TableName": T, "Key": KEY, "UpdateExpression": expr, **extra}


def cond(expr: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return put(KEY, ConditionExpression=expr, **extra)


def create(**kwargs: Any) -> tuple[str, dict[str, Any]]:
    body = {"TableName": "new-table", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}], "BillingMode": "PAY_PER_REQUEST"}
    body.update(kwargs)
    return "CreateTable", body


CASES: list[tuple[str, tuple[str, dict[str, Any]], str]] = [
    # table operations
    ("describe missing", ("DescribeTable", {"TableName": "no-such-table"}), NF),
    ("delete missing", ("DeleteTable", {"TableName": "no-such-table"}), NF),
    ("update missing", ("UpdateTable", {"TableName": "no-such-table", "BillingMode": "PAY_PER_REQUEST"}), NF),
    ("table name number", ("DescribeTable", {"TableName": 12345}), S),
    ("table name too short", ("DescribeTable", {"TableName": "ab"}), V),
    ("table name too long", ("DescribeTable", {"TableName": "a" * 256}), V),
    ("table name bad chars", ("DescribeTable", {"TableName": "bad name!"}), V),
    ("table name missing", ("DescribeTable", {}), V),
    ("create empty key schema", create(KeySchema=[]), V),
    ("create key schema not list", create(KeySchema={"a": 1}), S),
    ("create bad key type", create(KeySchema=[{"AttributeName": "pk", "KeyType": "PRIMARY"}]), V),
    ("create three keys", create(KeySchema=[{"AttributeName": x, "KeyType": "HASH"} for x in "abc"]), V),
    ("create bad attribute type", create(AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "X"}]), V),
    ("create key element not object", create(KeySchema=["pk"]), S),
    ("create zero capacity", create(BillingMode="PROVISIONED",
                                    ProvisionedThroughput={"ReadCapacityUnits": 0, "WriteCapacityUnits": 1}), V),
    ("create capacity as string",
     create(BillingMode="PROVISIONED", ProvisionedThroughput={"ReadCapacityUnits": "9", "WriteCapacityUnits": 1}), S),
    ("create capacity too large", create(BillingMode="PROVISIONED",
                                         ProvisionedThroughput={"ReadCapacityUnits": 10**9, "WriteCapacityUnits": 1}),
     "LimitExceededException"),
    ("create bad billing mode", create(BillingMode="FREE"), V),
    ("create existing", create(TableName=T), "ResourceInUseException"),
    ("create with gsi", create(GlobalSecondaryIndexes=[{"IndexName": "g"}]), V),
    ("list limit zero", ("ListTables", {"Limit": 0}), V),
    ("list limit too big", ("ListTables", {"Limit": 101}), V),
    ("list limit float", ("ListTables", {"Limit": 1.5}), S),
    # items: tables and keys
    ("put missing table", ("PutItem", {"TableName": "no-such-table", "Item": KEY}), NF),
    ("get missing table", ("GetItem", {"TableName": "no-such-table", "Key": KEY}), NF),
    ("put no item", ("PutItem", {"TableName": T}), V),
    ("put item is list", ("PutItem", {"TableName": T, "Item": [1, 2]}), S),
    ("put missing sort key", put({"pk": {"S": "a"}}), V),
    ("put wrong key type", put({"pk": {"N": "1"}, "sk": {"N": "1"}}), V),
    ("put empty string key", put({"pk": {"S": ""}, "sk": {"N": "1"}}), V),
    ("put hash key too long", put({"pk": {"S": "k" * 2049}, "sk": {"N": "1"}}), V),
    ("get key missing sort key", ("GetItem", {"TableName": T, "Key": {"pk": {"S": "a"}}}), V),
    ("get key extra attribute", ("GetItem", {"TableName": T, "Key": {**KEY, "x": {"S": "y"}}}), V),
    ("get key wrong type", ("GetItem", {"TableName": T, "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}), V),
    ("get key is list", ("GetItem", {"TableName": T, "Key": ["pk"]}), S),
    ("delete key wrong type", ("DeleteItem", {"TableName": T, "Key": {"pk": {"B": "AA=="}, "sk": {"N": "1"}}}), V),
    ("get consistent read string", ("GetItem", {"TableName": T, "Key": KEY, "ConsistentRead": "yes"}), S),
    # attribute values
    ("oversize item", put_attr({"S": "x" * (401 * 1024)}), V),
    ("nesting 33 levels", put_attr(nest(33)), V),
    ("nesting 300 levels", put_attr(nest(300)), V),
    ("empty attribute value", put_attr({}), V),
    ("two data types", put_attr({"S": "a", "N": "1"}), V),
    ("unknown data type only", put_attr({"X": "a"}), V),
    ("number not numeric", put_attr({"N": "abc"}), V),
    ("number 39 digits", put_attr({"N": "1" * 39}), V),
    ("number overflow", put_attr({"N": "1e126"}), V),
    ("number underflow", put_attr({"N": "1e-131"}), V),
    ("number as json number", put_attr({"N": 5}), S),
    ("binary not base64", put_attr({"B": "***"}), S),
    ("empty string set", put_attr({"SS": []}), V),
    ("duplicate string set", put_attr({"SS": ["a", "a"]}), V),
    ("duplicate number set", put_attr({"NS": ["1", "1.0"]}), V),
    ("duplicate binary set", put_attr({"BS": ["AA==", "AA=="]}), V),
    ("null false", put_attr({"NULL": False}), V),
    ("bool as string", put_attr({"BOOL": "yes"}), S),
    ("string as number", put_attr({"S": 12}), S),
    ("map as list", put_attr({"M": [1]}), S),
    ("list as map", put_attr({"L": {"a": 1}}), S),
    ("attribute value is string", put_attr("plain"), S),
    # expressions
    ("condition syntax error", cond("pk = "), V),
    ("condition empty", cond(""), V),
    ("condition undefined value", cond("pk = :nope"), V),
    ("condition undefined name", cond("#nope = pk"), V),
    ("condition unknown function", cond("frobnicate(pk)"), V),
    ("condition deep parentheses", cond("(" * 2000 + "attribute_exists(pk)" + ")" * 2000), V),
    ("condition over 4 KB", cond(" OR ".join(["attribute_exists(pk)"] * 300)), V),
    ("condition unused value", cond("attribute_exists(pk)", ExpressionAttributeValues={":x": {"S": "x"}}), V),
    ("condition unused name", cond("attribute_exists(pk)", ExpressionAttributeNames={"#x": "x"}), V),
    ("names empty map", cond("attribute_exists(pk)", ExpressionAttributeNames={}), V),
    ("names without expression", put(KEY, ExpressionAttributeNames={"#x": "x"}), V),
    ("value invalid in values", cond("pk = :v", ExpressionAttributeValues={":v": {"SS": []}}), V),
    ("update syntax error", update("SET"), V),
    ("update key attribute", update("SET pk = :v", ExpressionAttributeValues={":v": {"S": "x"}}), V),
    ("update same path twice", update("SET a = :v, a = :v", ExpressionAttributeValues={":v": {"S": "x"}}), V),
    ("update add to string", update("ADD s :n", ExpressionAttributeValues={":n": {"N": "1"}}), V),
    ("update unknown action", update("MULTIPLY a :v", ExpressionAttributeValues={":v": {"N": "1"}}), V),
    ("projection syntax error", ("GetItem", {"TableName": T, "Key": KEY, "ProjectionExpression": "a,,b"}), V),
    ("put return values all new", put(KEY, ReturnValues="ALL_NEW"), V),
    ("return values garbage", put(KEY, ReturnValues="EVERYTHING"), V),
    ("return consumed garbage", put(KEY, ReturnConsumedCapacity="LOTS"), V),
    ("legacy expected", put(KEY, Expected={"pk": {"Exists": False}}), V),
    # query and scan
    ("query without key condition", ("Query", {"TableName": T}), V),
    ("query key condition OR", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a OR pk = :a",
                                          "ExpressionAttributeValues": {":a": {"S": "a"}}}), V),
    ("query limit zero", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a", "Limit": 0,
                                    "ExpressionAttributeValues": {":a": {"S": "a"}}}), V),
    ("query limit string", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a", "Limit": "ten",
                                      "ExpressionAttributeValues": {":a": {"S": "a"}}}), S),
    ("query start key not map", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a",
                                           "ExclusiveStartKey": "x",
                                           "ExpressionAttributeValues": {":a": {"S": "a"}}}), S),
    ("query select garbage", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a", "Select": "SOME",
                                        "ExpressionAttributeValues": {":a": {"S": "a"}}}), V),
    # An Integer is a Java int: past it, the number cannot be read (it used to reach storage and fail: a 503)
    ("query limit past int32", ("Query", {"TableName": T, "KeyConditionExpression": "pk = :a", "Limit": 2**31,
                                          "ExpressionAttributeValues": {":a": {"S": "a"}}}), S),
    ("scan limit 1e308", ("Scan", {"TableName": T, "Limit": 1e308}), S),
    ("create capacity past a Long",
     create(BillingMode="PROVISIONED", ProvisionedThroughput={"ReadCapacityUnits": 2**63, "WriteCapacityUnits": 1}), S),
    ("scan total segments zero", ("Scan", {"TableName": T, "Segment": 0, "TotalSegments": 0}), V),
    ("scan segment negative", ("Scan", {"TableName": T, "Segment": -1, "TotalSegments": 2}), V),
    ("scan start key wrong schema", ("Scan", {"TableName": T, "ExclusiveStartKey": {"x": {"S": "y"}}}), V),
    ("scan filter syntax error", ("Scan", {"TableName": T, "FilterExpression": "a = = b"}), V),
    ("scan missing table", ("Scan", {"TableName": "no-such-table"}), NF),
    # batches
    ("batch write empty", ("BatchWriteItem", {"RequestItems": {}}), V),
    ("batch write too many", ("BatchWriteItem", {"RequestItems": {T: [
        {"PutRequest": {"Item": {"pk": {"S": str(i)}, "sk": {"N": "1"}}}} for i in range(26)]}}), V),
    ("batch write both requests", ("BatchWriteItem", {"RequestItems": {T: [
        {"PutRequest": {"Item": KEY}, "DeleteRequest": {"Key": KEY}}]}}), V),
    ("batch write not list", ("BatchWriteItem", {"RequestItems": {T: {"PutRequest": {}}}}), S),
    ("batch write missing table", ("BatchWriteItem", {"RequestItems": {"no-such-table": [
        {"PutRequest": {"Item": KEY}}]}}), NF),
    ("batch get too many", ("BatchGetItem", {"RequestItems": {T: {"Keys": [
        {"pk": {"S": str(i)}, "sk": {"N": "1"}} for i in range(101)]}}}), V),
    ("batch get empty keys", ("BatchGetItem", {"RequestItems": {T: {"Keys": []}}}), V),
    ("batch get bad key", ("BatchGetItem", {"RequestItems": {T: {"Keys": [{"pk": {"S": "a"}}]}}}), V),
]


@pytest.mark.parametrize(("op_body", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_request(kynamo: LocalKynamo, op_body: tuple[str, dict[str, Any]], expected: str) -> None:  # noqa: F811
    op, body = op_body
    status, doc = kynamo.post(op, body)
    assert status == 400, (status, doc)
    assert error_type(doc) == expected, doc
    assert isinstance(doc.get("message", ""), str)


@pytest.mark.parametrize(
    ("name", "target", "raw", "expected"),
    [
        ("truncated json", "GetItem", b'{"TableName": "hostile"', S),
        ("json array", "GetItem", b"[1, 2]", S),
        ("json string", "GetItem", b'"hello"', S),
        ("invalid utf-8", "GetItem", b'{"TableName": "\xff\xfe"}', S),
        ("nan literal", "PutItem", b'{"TableName": "hostile", "Item": NaN}', S),
        ("deep json", "PutItem", b"[" * 200000 + b"]" * 200000, S),
        ("unknown operation", "FrobnicateTable", b"{}", "UnknownOperationException"),
        ("empty body", "GetItem", b"", V),
    ],
)
def test_malformed_bodies(kynamo: LocalKynamo, name: str, target: str, raw: bytes, expected: str) -> None:  # noqa: F811
    status, doc = kynamo.post(target, None, raw=raw)
    assert status == 400, (name, status, doc)
    assert error_type(doc) == expected


def test_bad_targets(kynamo: LocalKynamo) -> None:  # noqa: F811
    for headers in ({}, {"X-Amz-Target": "DynamoDB_20111205.GetItem"}, {"X-Amz-Target": "GetItem"}):
        status, doc = kynamo.post(None, {"TableName": T}, headers=headers)
        assert status == 400 and error_type(doc) == "UnknownOperationException"


def test_oversize_request_body(kynamo: LocalKynamo) -> None:  # noqa: F811
    body = json.dumps({"TableName": T, "Item": {**KEY, "a": {"S": "x" * (17 << 20)}}}).encode()
    status, doc = kynamo.post("PutItem", None, raw=body)
    assert status == 400 and error_type(doc) == V


def test_health_and_data_intact_after_abuse(kynamo: LocalKynamo, ddb: Any) -> None:  # noqa: F811
    import urllib.request

    with urllib.request.urlopen(kynamo.endpoint + "/") as r:
        assert r.status == 200
    item = ddb.get_item(TableName=T, Key=KEY, ConsistentRead=True)["Item"]
    assert item == {**KEY, "s": {"S": "text"}, "n": {"N": "5"}}
    assert "request failed" not in kynamo.log_tail(200_000)  # no internal error was logged


def test_metrics_count_requests_and_errors(kynamo: LocalKynamo) -> None:  # noqa: F811
    import urllib.request

    with urllib.request.urlopen(kynamo.endpoint + "/metrics") as r:
        text = r.read().decode()
    assert 'kynamo_router_requests_total{operation="PutItem",table="hostile"}' in text
    assert 'type="ValidationException"' in text and 'type="SerializationException"' in text
    assert "kynamo_router_request_seconds_bucket" in text
    assert 'table="no-such-table"' not in text  # unknown names never become label values


def test_at_least_sixty_hostile_cases() -> None:
    assert len(CASES) >= 60
