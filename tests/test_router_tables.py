"""Table lifecycle through boto3 against a real `kynamo local`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow

KS = [{"AttributeName": "pk", "KeyType": "HASH"}]
AD = [{"AttributeName": "pk", "AttributeType": "S"}]


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return err.value.response["Error"]["Code"]


def test_create_describe_waiter_delete(ddb: Any) -> None:  # noqa: F811
    started = time.monotonic()
    desc = ddb.create_table(TableName="life", KeySchema=KS, AttributeDefinitions=AD,
                            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 7})["TableDescription"]
    assert desc["TableStatus"] == "CREATING"
    assert desc["TableArn"].endswith(":table/life")
    ddb.get_waiter("table_exists").wait(TableName="life", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert time.monotonic() - started < 10
    table = ddb.describe_table(TableName="life")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == KS and table["AttributeDefinitions"] == AD
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 7
    assert table["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    assert table["ItemCount"] == 0 and table["TableSizeBytes"] == 0
    assert "CreationDateTime" in table

    with pytest.raises(ClientError) as err:
        ddb.create_table(TableName="life", KeySchema=KS, AttributeDefinitions=AD, BillingMode="PAY_PER_REQUEST")
    assert _code(err) == "ResourceInUseException"

    ddb.put_item(TableName="life", Item={"pk": {"S": "x"}, "v": {"S": "y" * 100}})
    deadline = time.monotonic() + 10
    while ddb.describe_table(TableName="life")["Table"]["ItemCount"] != 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    table = ddb.describe_table(TableName="life")["Table"]
    assert table["ItemCount"] == 1 and table["TableSizeBytes"] > 100

    assert ddb.delete_table(TableName="life")["TableDescription"]["TableStatus"] == "DELETING"
    ddb.get_waiter("table_not_exists").wait(TableName="life", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    with pytest.raises(ClientError) as err:
        ddb.describe_table(TableName="life")
    assert _code(err) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        ddb.get_item(TableName="life", Key={"pk": {"S": "x"}})
    assert _code(err) == "ResourceNotFoundException"


def test_recreate_after_delete_is_empty(ddb: Any) -> None:  # noqa: F811
    make_table(ddb, "again", sk=None)
    ddb.put_item(TableName="again", Item={"pk": {"S": "x"}})
    ddb.delete_table(TableName="again")
    ddb.get_waiter("table_not_exists").wait(TableName="again", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    make_table(ddb, "again", sk=None)
    assert "Item" not in ddb.get_item(TableName="again", Key={"pk": {"S": "x"}})


def test_list_tables_paginates(ddb: Any) -> None:  # noqa: F811
    names = [f"list-{i:02d}" for i in range(7)]
    for n in names:
        ddb.create_table(TableName=n, KeySchema=KS, AttributeDefinitions=AD, BillingMode="PAY_PER_REQUEST")
    seen: list[str] = []
    kwargs: dict[str, Any] = {"Limit": 3, "ExclusiveStartTableName": "list-"}
    while True:
        page = ddb.list_tables(**kwargs)
        assert len(page["TableNames"]) <= 3
        seen += [n for n in page["TableNames"] if n.startswith("list-")]
        if "LastEvaluatedTableName" not in page:
            break
        kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
    assert seen == names
    paginator = ddb.get_paginator("list_tables")
    all_names = [n for p in paginator.paginate(PaginationConfig={"PageSize": 2}) for n in p["TableNames"]]
    assert set(names) <= set(all_names)
    assert all_names == sorted(all_names)


def test_partition_count_follows_throughput(ddb: Any, kynamo: LocalKynamo) -> None:  # noqa: F811
    import json

    make_table(ddb, "wide", sk=None, wcu=3000)
    doc = json.loads((kynamo.data_dir / "control" / "tables.json").read_text())
    (meta,) = [t for t in doc["tables"] if t["name"] == "wide"]
    assert len(meta["partitions"]) == 3
    assert all(p["leader"] for p in meta["partitions"])


def test_update_table(ddb: Any) -> None:  # noqa: F811
    make_table(ddb, "upd", sk=None, wcu=5)
    desc = ddb.update_table(TableName="upd", ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 20})
    pt = desc["TableDescription"]["ProvisionedThroughput"]
    assert (pt["ReadCapacityUnits"], pt["WriteCapacityUnits"]) == (10, 20)
    assert "LastIncreaseDateTime" in pt
    with pytest.raises(ClientError) as err:
        ddb.update_table(TableName="upd", ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 20})
    assert "will not change" in err.value.response["Error"]["Message"]
    desc = ddb.update_table(TableName="upd", BillingMode="PAY_PER_REQUEST")["TableDescription"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    with pytest.raises(ClientError) as err:
        ddb.update_table(TableName="upd", BillingMode="PROVISIONED")
    assert _code(err) == "ValidationException"
    ddb.update_table(TableName="upd", DeletionProtectionEnabled=True)
    with pytest.raises(ClientError) as err:
        ddb.delete_table(TableName="upd")
    assert "protected against deletion" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        ddb.update_table(TableName="nope-missing", BillingMode="PAY_PER_REQUEST")
    assert _code(err) == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"KeySchema": [{"AttributeName": "pk", "KeyType": "RANGE"}]}, "first KeySchemaElement is not a HASH"),
        ({"AttributeDefinitions": [*AD, {"AttributeName": "x", "AttributeType": "S"}]},
         "Number of attributes in KeySchema does not exactly match"),
        ({"AttributeDefinitions": [{"AttributeName": "other", "AttributeType": "S"}]},
         "Some index key attributes are not defined"),
        ({"BillingMode": "PROVISIONED"}, "ReadCapacityUnits and WriteCapacityUnits must both be specified"),
        ({"ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}},
         "Neither ReadCapacityUnits nor WriteCapacityUnits"),
        ({"KeySchema": [*KS, {"AttributeName": "pk", "KeyType": "RANGE"}]}, "same name"),
    ],
)
def test_create_table_validation(ddb: Any, kwargs: dict[str, Any], fragment: str) -> None:  # noqa: F811
    args: dict[str, Any] = {"TableName": "bad-table", "KeySchema": KS, "AttributeDefinitions": AD,
                            "BillingMode": "PAY_PER_REQUEST"}
    args.update(kwargs)
    if "ProvisionedThroughput" not in kwargs and args["BillingMode"] == "PROVISIONED":
        pass
    with pytest.raises(ClientError) as err:
        ddb.create_table(**args)
    assert _code(err) == "ValidationException"
    assert fragment in err.value.response["Error"]["Message"]


def test_tables_survive_restart(tmp_path: Any) -> None:
    env = LocalKynamo(tmp_path / "data")
    env.start()
    try:
        c = env.client()
        make_table(c, "durable")
        c.put_item(TableName="durable", Item={"pk": {"S": "a"}, "sk": {"S": "b"}, "v": {"N": "42"}})
        assert env.stop() == 0
        env.proc = None
        env.start()
        c = env.client(retries=6)
        assert c.describe_table(TableName="durable")["Table"]["TableStatus"] == "ACTIVE"
        item = c.get_item(TableName="durable", Key={"pk": {"S": "a"}, "sk": {"S": "b"}}, ConsistentRead=True)
        assert item["Item"]["v"] == {"N": "42"}
    finally:
        env.stop()
