"""Item CRUD, ReturnValues, conditions and consumed capacity through boto3 (client and resource)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "items"


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    return make_table(ddb, T)


def key(pk: str, sk: str = "s") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def eventually(read: Any, timeout: float = 5.0) -> Any:
    """Repeat an eventually consistent read until it sees the item (a follower may lag a heartbeat)."""
    deadline = time.monotonic() + timeout
    while True:
        out = read()
        if "Item" in out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_eventually_consistent_reads_converge(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={**key("ev"), "v": {"N": "1"}})
    out = eventually(lambda: ddb.get_item(TableName=T, Key=key("ev"), ConsistentRead=False))
    assert out["Item"]["v"] == {"N": "1"}


def test_put_get_delete(ddb: Any) -> None:  # noqa: F811
    item = {**key("crud"), "n": {"N": "1.50"}, "b": {"B": b"\x00\xff"}, "l": {"L": [{"S": "x"}, {"NULL": True}]}}
    assert "Attributes" not in ddb.put_item(TableName=T, Item=item)
    got = ddb.get_item(TableName=T, Key=key("crud"), ConsistentRead=True)["Item"]
    assert got["n"] == {"N": "1.5"} and got["b"] == {"B": b"\x00\xff"} and got["l"]["L"][1] == {"NULL": True}
    old = ddb.put_item(TableName=T, Item={**key("crud"), "v": {"S": "2"}}, ReturnValues="ALL_OLD")["Attributes"]
    assert old["n"] == {"N": "1.5"}
    assert ddb.get_item(TableName=T, Key=key("crud"))["Item"] == {**key("crud"), "v": {"S": "2"}}
    old = ddb.delete_item(TableName=T, Key=key("crud"), ReturnValues="ALL_OLD")["Attributes"]
    assert old["v"] == {"S": "2"}
    assert "Item" not in ddb.get_item(TableName=T, Key=key("crud"), ConsistentRead=True)
    assert "Attributes" not in ddb.delete_item(TableName=T, Key=key("crud"), ReturnValues="ALL_OLD")


def test_projection_on_get(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={**key("proj"), "a": {"M": {"b": {"L": [{"N": "1"}, {"N": "2"}]}}}, "c": {"S": "x"}})
    got = ddb.get_item(TableName=T, Key=key("proj"), ProjectionExpression="a.b[1], #c",
                       ExpressionAttributeNames={"#c": "c"})["Item"]
    assert got == {"a": {"M": {"b": {"L": [{"N": "2"}]}}}, "c": {"S": "x"}}


@pytest.mark.parametrize(
    ("rv", "expected"),
    [
        ("NONE", None),
        ("ALL_OLD", {"pk": {"S": "rv"}, "sk": {"S": "s"}, "a": {"N": "1"}, "b": {"S": "keep"}}),
        ("UPDATED_OLD", {"a": {"N": "1"}}),
        ("ALL_NEW", {"pk": {"S": "rv"}, "sk": {"S": "s"}, "a": {"N": "2"}, "b": {"S": "keep"}, "c": {"S": "new"}}),
        ("UPDATED_NEW", {"a": {"N": "2"}, "c": {"S": "new"}}),
    ],
)
def test_update_return_values(ddb: Any, rv: str, expected: dict[str, Any] | None) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={**key("rv"), "a": {"N": "1"}, "b": {"S": "keep"}})
    out = ddb.update_item(TableName=T, Key=key("rv"), UpdateExpression="SET a = a + :one, c = :c",
                          ExpressionAttributeValues={":one": {"N": "1"}, ":c": {"S": "new"}}, ReturnValues=rv)
    assert out.get("Attributes") == expected


def test_update_creates_item_and_conditions(ddb: Any) -> None:  # noqa: F811
    out = ddb.update_item(TableName=T, Key=key("upsert"), UpdateExpression="ADD cnt :one",
                          ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    assert out["Attributes"]["cnt"] == {"N": "1"}
    with pytest.raises(ClientError) as err:
        ddb.update_item(TableName=T, Key=key("upsert"), UpdateExpression="SET x = :v",
                        ConditionExpression="cnt > :lim",
                        ExpressionAttributeValues={":v": {"S": "v"}, ":lim": {"N": "5"}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert err.value.response["Item"]["cnt"] == {"N": "1"}
    with pytest.raises(ClientError) as err:
        ddb.update_item(TableName=T, Key=key("upsert"), UpdateExpression="SET pk = :v",
                        ExpressionAttributeValues={":v": {"S": "v"}})
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_put_conditions(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item=key("cond"), ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=T, Item=key("cond"), ConditionExpression="attribute_not_exists(pk)")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert err.value.response["Error"]["Message"] == "The conditional request failed"
    assert "Item" not in err.value.response
    with pytest.raises(ClientError) as err:
        ddb.delete_item(TableName=T, Key=key("cond"), ConditionExpression="attribute_exists(nope)",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert err.value.response["Item"] == key("cond")
    ddb.delete_item(TableName=T, Key=key("cond"), ConditionExpression="attribute_exists(pk)")


def test_consumed_capacity(ddb: Any) -> None:  # noqa: F811
    big = {**key("cap"), "v": {"S": "x" * 3000}}
    out = ddb.put_item(TableName=T, Item=big, ReturnConsumedCapacity="TOTAL")
    assert out["ConsumedCapacity"] == {"TableName": T, "CapacityUnits": 3.0}
    out = eventually(lambda: ddb.get_item(TableName=T, Key=key("cap"), ReturnConsumedCapacity="TOTAL",
                                          ConsistentRead=False))
    assert out["ConsumedCapacity"]["CapacityUnits"] == 0.5
    out = ddb.get_item(TableName=T, Key=key("cap"), ReturnConsumedCapacity="TOTAL", ConsistentRead=True)
    assert out["ConsumedCapacity"]["CapacityUnits"] == 1.0
    out = ddb.get_item(TableName=T, Key=key("cap"), ReturnConsumedCapacity="INDEXES", ConsistentRead=False)
    assert out["ConsumedCapacity"]["Table"] == {"CapacityUnits": 0.5}
    assert "ConsumedCapacity" not in ddb.get_item(TableName=T, Key=key("cap"))


def test_writes_bill_the_larger_of_the_old_and_new_item(ddb: Any) -> None:  # noqa: F811
    """As DynamoDB Local answers (asked with these same calls): overwrites and deletes bill the bigger item."""
    big, small = {**key("bill"), "v": {"S": "x" * 5000}}, {**key("bill"), "v": {"S": "y" * 100}}

    def units(out: dict[str, Any]) -> float:
        return out["ConsumedCapacity"]["CapacityUnits"]

    assert units(ddb.put_item(TableName=T, Item=big, ReturnConsumedCapacity="TOTAL")) == 5.0
    assert units(ddb.put_item(TableName=T, Item=small, ReturnConsumedCapacity="TOTAL")) == 5.0
    assert units(ddb.put_item(TableName=T, Item=big, ReturnConsumedCapacity="TOTAL")) == 5.0
    for rv in ("UPDATED_OLD", "NONE"):  # shrinking bills the item before
        ddb.put_item(TableName=T, Item=big)
        assert units(ddb.update_item(TableName=T, Key=key("bill"), UpdateExpression="SET v = :v",
                                     ExpressionAttributeValues={":v": {"S": "z"}}, ReturnValues=rv,
                                     ReturnConsumedCapacity="TOTAL")) == 5.0
    assert units(ddb.update_item(TableName=T, Key=key("bill"), UpdateExpression="SET v = :v",  # growing: after
                                 ExpressionAttributeValues={":v": {"S": "w" * 5000}},
                                 ReturnConsumedCapacity="TOTAL")) == 5.0
    assert units(ddb.delete_item(TableName=T, Key=key("bill"), ReturnConsumedCapacity="TOTAL")) == 5.0
    assert units(ddb.delete_item(TableName=T, Key=key("bill"), ReturnConsumedCapacity="TOTAL")) == 1.0
    ddb.put_item(TableName=T, Item=big)
    out = ddb.batch_write_item(RequestItems={T: [{"PutRequest": {"Item": small}}]}, ReturnConsumedCapacity="TOTAL")
    assert out["ConsumedCapacity"][0]["CapacityUnits"] == 5.0
    ddb.put_item(TableName=T, Item=big)
    out = ddb.batch_write_item(RequestItems={T: [{"DeleteRequest": {"Key": key("bill")}}]},
                               ReturnConsumedCapacity="TOTAL")
    assert out["ConsumedCapacity"][0]["CapacityUnits"] == 5.0


def test_resource_api(kynamo: LocalKynamo) -> None:  # noqa: F811
    table = kynamo.resource().Table(T)
    table.put_item(Item={"pk": "res", "sk": "s", "n": Decimal("3.25"), "tags": {"a", "b"}, "m": {"x": [1, "y"]}})
    item = table.get_item(Key={"pk": "res", "sk": "s"})["Item"]
    assert item["n"] == Decimal("3.25") and item["tags"] == {"a", "b"} and item["m"] == {"x": [1, "y"]}
    with pytest.raises(ClientError):
        table.put_item(Item={"pk": "res", "sk": "s"}, ConditionExpression=Attr("n").lt(1))
    table.update_item(Key={"pk": "res", "sk": "s"}, UpdateExpression="REMOVE m DELETE tags :t",
                      ExpressionAttributeValues={":t": {"a"}})
    assert table.get_item(Key={"pk": "res", "sk": "s"}, ConsistentRead=True)["Item"] == {
        "pk": "res", "sk": "s", "n": Decimal("3.25"), "tags": {"b"}}


def test_item_size_limit(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={**key("big"), "v": {"S": "x" * (400 * 1024 - 20)}})
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=T, Item={**key("big"), "v": {"S": "x" * (400 * 1024)}})
    assert err.value.response["Error"]["Message"] == "Item size has exceeded the maximum allowed size"
    with pytest.raises(ClientError) as err:
        ddb.update_item(TableName=T, Key=key("big"), UpdateExpression="SET w = :w",
                        ExpressionAttributeValues={":w": {"S": "y" * 1000}})
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_provisioned_throughput_is_enforced(kynamo: LocalKynamo, ddb: Any) -> None:  # noqa: F811
    make_table(ddb, "items-slow", sk=None, wcu=1)
    client = kynamo.client(retries=1)  # no SDK retry: see the throttle itself
    # Spends the whole burst (300 s x 1 WCU) and 90 units more: at 1 WCU/s the next write waits 90 s, so a slow
    # machine between the two puts cannot refill the unit it needs (with exactly 300 units, one slow second did).
    big = {"pk": {"S": "big"}, "v": {"S": "x" * (390 * 1024)}}
    client.put_item(TableName="items-slow", Item=big)
    with pytest.raises(ClientError) as err:
        client.put_item(TableName="items-slow", Item={"pk": {"S": "next"}})
    assert err.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert client.get_item(TableName="items-slow", Key={"pk": {"S": "big"}})["Item"]["pk"] == {"S": "big"}
    ddb.update_table(TableName="items-slow", ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 1000})
    # At the old rate the 90 units owed take 90 s to refill; at the new one a fraction of a second, once this
    # router's next grant from the GAC arrives.
    deadline = time.monotonic() + 3
    while True:
        try:
            client.put_item(TableName="items-slow", Item={"pk": {"S": "next"}})
            break
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ProvisionedThroughputExceededException" \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
