"""Query and Scan through boto3 on a three-partition table: order, filters, pagination, segments."""

from __future__ import annotations

from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "qscan"
PKS = 30
PER_PK = 10


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    make_table(ddb, T, sk_type="N", wcu=3000)  # 3 partitions
    for p in range(PKS):
        reqs = [{"PutRequest": {"Item": {"pk": {"S": f"p{p:02d}"}, "sk": {"N": str(s)},
                                         "odd": {"BOOL": s % 2 == 1}, "pad": {"S": "z" * 50}}}}
                for s in range(PER_PK)]
        for i in range(0, len(reqs), 25):
            assert not ddb.batch_write_item(RequestItems={T: reqs[i : i + 25]})["UnprocessedItems"]
    return T


def _scan_all(ddb: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:  # noqa: F811
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = ddb.scan(TableName=T, **kwargs)
        pages += 1
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items, pages
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_query_order_and_conditions(ddb: Any) -> None:  # noqa: F811
    out = ddb.query(TableName=T, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p03"}})
    assert [int(i["sk"]["N"]) for i in out["Items"]] == list(range(PER_PK))
    assert out["Count"] == out["ScannedCount"] == PER_PK and "LastEvaluatedKey" not in out
    out = ddb.query(TableName=T, KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b", ScanIndexForward=False,
                    ExpressionAttributeValues={":p": {"S": "p03"}, ":a": {"N": "2"}, ":b": {"N": "5"}})
    assert [int(i["sk"]["N"]) for i in out["Items"]] == [5, 4, 3, 2]
    for op, want in (("<", [0, 1, 2]), ("<=", [0, 1, 2, 3]), (">", [4, 5, 6, 7, 8, 9]), ("=", [3])):
        out = ddb.query(TableName=T, KeyConditionExpression=f"pk = :p AND sk {op} :s",
                        ExpressionAttributeValues={":p": {"S": "p03"}, ":s": {"N": "3"}})
        assert [int(i["sk"]["N"]) for i in out["Items"]] == want, op


def test_query_pagination_filter_projection_count(ddb: Any) -> None:  # noqa: F811
    seen: list[int] = []
    kwargs: dict[str, Any] = {}
    while True:
        out = ddb.query(TableName=T, KeyConditionExpression="pk = :p", FilterExpression="odd = :t",
                        ProjectionExpression="sk", Limit=3, ConsistentRead=True,
                        ExpressionAttributeValues={":p": {"S": "p07"}, ":t": {"BOOL": True}}, **kwargs)
        assert out["ScannedCount"] <= 3
        seen += [int(i["sk"]["N"]) for i in out["Items"]]
        assert all(set(i) == {"sk"} for i in out["Items"])
        if "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    assert seen == [1, 3, 5, 7, 9]
    out = ddb.query(TableName=T, KeyConditionExpression="pk = :p", Select="COUNT",
                    ExpressionAttributeValues={":p": {"S": "p07"}})
    assert out["Count"] == PER_PK and "Items" not in out


def test_query_resource_and_paginator(kynamo: LocalKynamo, ddb: Any) -> None:  # noqa: F811
    table = kynamo.resource().Table(T)
    out = table.query(KeyConditionExpression=Key("pk").eq("p11") & Key("sk").gte(8))
    assert [int(i["sk"]) for i in out["Items"]] == [8, 9]
    pages = ddb.get_paginator("query").paginate(
        TableName=T, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p11"}},
        PaginationConfig={"PageSize": 4})
    assert sum(len(p["Items"]) for p in pages) == PER_PK


def test_scan_everything_across_partitions(ddb: Any) -> None:  # noqa: F811
    items, pages = _scan_all(ddb, Limit=17)
    assert pages > 3
    keys = [(i["pk"]["S"], int(i["sk"]["N"])) for i in items]
    assert len(keys) == len(set(keys)) == PKS * PER_PK


def test_scan_filter_and_count(ddb: Any, kynamo: LocalKynamo) -> None:  # noqa: F811
    items, _ = _scan_all(ddb, FilterExpression="odd = :f AND sk < :n",
                         ExpressionAttributeValues={":f": {"BOOL": False}, ":n": {"N": "4"}})
    assert sorted({int(i["sk"]["N"]) for i in items}) == [0, 2] and len(items) == 2 * PKS
    out = ddb.scan(TableName=T, Select="COUNT")
    assert out["Count"] == PKS * PER_PK and "Items" not in out
    table = kynamo.resource().Table(T)
    got = table.scan(FilterExpression=Attr("sk").eq(9) & Attr("pk").begins_with("p1"))["Items"]
    assert sorted(i["pk"] for i in got) == [f"p1{i}" for i in range(10)]


def test_parallel_scan_segments_partition_the_table(ddb: Any) -> None:  # noqa: F811
    total = 4
    seen: list[tuple[str, int]] = []
    for segment in range(total):
        items, _ = _scan_all(ddb, Segment=segment, TotalSegments=total, Limit=40)
        seen += [(i["pk"]["S"], int(i["sk"]["N"])) for i in items]
    assert len(seen) == len(set(seen)) == PKS * PER_PK


def test_scan_page_stops_near_one_megabyte(ddb: Any) -> None:  # noqa: F811
    make_table(ddb, "qs-big", sk=None)
    blob = "b" * 100_000
    for i in range(25):
        ddb.put_item(TableName="qs-big", Item={"pk": {"S": f"k{i}"}, "v": {"S": blob}})
    sizes = []
    kwargs: dict[str, Any] = {}
    while True:
        page = ddb.scan(TableName="qs-big", **kwargs)
        sizes.append(len(page["Items"]))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert sum(sizes) == 25 and len(sizes) >= 3 and max(sizes) <= 11


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"KeyConditionExpression": "sk = :s", "ExpressionAttributeValues": {":s": {"N": "1"}}},
         "missed key schema element"),
        ({"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"N": "1"}}},
         "Condition parameter type does not match schema type"),
        ({"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}, ":x": {"S": "b"}}},
         "unused in expressions"),
        ({"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}},
          "ExclusiveStartKey": {"pk": {"S": "a"}}}, "The provided starting key is invalid"),
        ({"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}},
          "Select": "SPECIFIC_ATTRIBUTES"}, "SPECIFIC_ATTRIBUTES"),
        ({"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}},
          "IndexName": "gsi1"}, "does not have the specified index"),
    ],
)
def test_query_errors(ddb: Any, kwargs: dict[str, Any], fragment: str) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        ddb.query(TableName=T, **kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in err.value.response["Error"]["Message"]


def test_eventually_consistent_scan_converges(ddb: Any) -> None:  # noqa: F811
    import time

    deadline = time.monotonic() + 5
    while True:
        count = sum(ddb.scan(TableName=T, Select="COUNT", ConsistentRead=False, Segment=s, TotalSegments=3)["Count"]
                    for s in range(3))
        if count == PKS * PER_PK or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert count == PKS * PER_PK


def test_scan_segment_errors(ddb: Any) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        ddb.scan(TableName=T, Segment=4, TotalSegments=4)
    assert "out of bounds" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        ddb.scan(TableName=T, Segment=1)
    assert "TotalSegments" in err.value.response["Error"]["Message"]
