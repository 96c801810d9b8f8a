"""Every expression feature through the API: evaluated at the partition leader, atomically."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from router_env import ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "exprs"
K = {"pk": {"S": "doc"}}
DOC = {
    **K,
    "name": {"S": "widget"},
    "price": {"N": "10"},
    "tags": {"SS": ["red", "blue"]},
    "nums": {"NS": ["1", "2"]},
    "arr": {"L": [{"S": "a"}, {"S": "b"}, {"M": {"c": {"N": "3"}}}]},
    "tree": {"M": {"b": {"L": [{"N": "0"}, {"N": "1"}, {"M": {"c": {"S": "deep"}}}]}}},
    "flag": {"BOOL": True},
}


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    return make_table(ddb, T, sk=None)


@pytest.fixture(autouse=True)
def fresh(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item=DOC)


def holds(ddb: Any, expr: str, values: dict[str, Any] | None = None,  # noqa: F811
          names: dict[str, str] | None = None) -> bool:
    """Whether the condition holds on DOC, asked through a conditional no-op update."""
    kwargs: dict[str, Any] = {"ConditionExpression": expr}
    if values:
        kwargs["ExpressionAttributeValues"] = values
    if names:
        kwargs["ExpressionAttributeNames"] = names
    try:
        ddb.update_item(TableName=T, Key=K, **kwargs)
        return True
    except ClientError as err:
        if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise


@pytest.mark.parametrize(
    ("expr", "values", "expected"),
    [
        ("price = :v", {":v": {"N": "10"}}, True),
        ("price <> :v", {":v": {"N": "10"}}, False),
        ("price < :v", {":v": {"N": "10.5"}}, True),
        ("price >= :v", {":v": {"N": "11"}}, False),
        ("price BETWEEN :a AND :b", {":a": {"N": "5"}, ":b": {"N": "10"}}, True),
        ("price IN (:a, :b)", {":a": {"N": "1"}, ":b": {"N": "10"}}, True),
        ("attribute_exists(tree.b[2].c)", None, True),
        ("attribute_not_exists(tree.b[3])", None, True),
        ("attribute_type(tags, :t)", {":t": {"S": "SS"}}, True),
        ("attribute_type(price, :t)", {":t": {"S": "S"}}, False),
        ("begins_with(#n, :p)", {":p": {"S": "wid"}}, True),
        ("contains(tags, :t)", {":t": {"S": "red"}}, True),
        ("contains(#n, :t)", {":t": {"S": "dge"}}, True),
        ("contains(arr, :t)", {":t": {"S": "b"}}, True),
        ("size(arr) = :n", {":n": {"N": "3"}}, True),
        ("size(#n) > :n", {":n": {"N": "6"}}, False),
        ("NOT flag = :f", {":f": {"BOOL": False}}, True),
        ("price = :a OR price = :b AND flag = :f", {":a": {"N": "10"}, ":b": {"N": "1"}, ":f": {"BOOL": False}}, True),
        ("(price = :a OR price = :b) AND flag = :f", {":a": {"N": "10"}, ":b": {"N": "1"}, ":f": {"BOOL": False}},
         False),
        ("arr[2].c = :n", {":n": {"N": "3"}}, True),
        ("tree.b[2].c = :s", {":s": {"S": "deep"}}, True),
        ("absent = :s", {":s": {"S": "x"}}, False),
    ],
)
def test_conditions(ddb: Any, expr: str, values: dict[str, Any] | None, expected: bool) -> None:  # noqa: F811
    names = {"#n": "name"} if "#n" in expr else None
    assert holds(ddb, expr, values, names) is expected


def _update(ddb: Any, expr: str, values: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: F811
    kwargs: dict[str, Any] = {"UpdateExpression": expr, "ReturnValues": "ALL_NEW"}
    if values:
        kwargs["ExpressionAttributeValues"] = values
    return ddb.update_item(TableName=T, Key=K, **kwargs)["Attributes"]


def test_set_arithmetic_and_functions(ddb: Any) -> None:  # noqa: F811
    new = _update(ddb, "SET price = price - :d, stock = if_not_exists(stock, :z) + :one, arr = list_append(arr, :l)",
                  {":d": {"N": "2.5"}, ":z": {"N": "0"}, ":one": {"N": "1"}, ":l": {"L": [{"S": "z"}]}})
    assert new["price"] == {"N": "7.5"} and new["stock"] == {"N": "1"}
    assert new["arr"]["L"][-1] == {"S": "z"}
    new = _update(ddb, "SET tree.b[2].c = :v, tree.added = :v", {":v": {"S": "changed"}})
    assert new["tree"]["M"]["b"]["L"][2] == {"M": {"c": {"S": "changed"}}}
    assert new["tree"]["M"]["added"] == {"S": "changed"}


def test_remove_add_delete(ddb: Any) -> None:  # noqa: F811
    _update(ddb, "ADD tags :t", {":t": {"SS": ["green"]}})
    new = _update(ddb, "REMOVE arr[0], flag ADD nums :n DELETE tags :r", {":n": {"NS": ["3"]}, ":r": {"SS": ["red"]}})
    assert new["arr"]["L"][0] == {"S": "b"} and "flag" not in new
    assert sorted(new["nums"]["NS"]) == ["1", "2", "3"]
    assert sorted(new["tags"]["SS"]) == ["blue", "green"]
    new = _update(ddb, "DELETE tags :all", {":all": {"SS": ["blue", "green"]}})
    assert "tags" not in new


def test_update_errors_at_apply_time(ddb: Any) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        _update(ddb, "SET price = #n + :one", {":one": {"N": "1"}})
    assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as err:
        ddb.update_item(TableName=T, Key=K, UpdateExpression="SET #n = #n + :one",
                        ExpressionAttributeNames={"#n": "name"}, ExpressionAttributeValues={":one": {"N": "1"}})
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert ddb.get_item(TableName=T, Key=K, ConsistentRead=True)["Item"] == DOC  # nothing applied


def test_filter_and_projection_in_scan(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={"pk": {"S": "other"}, "price": {"N": "99"}})
    out = ddb.scan(TableName=T, FilterExpression="price < :p AND contains(tags, :t)",
                   ProjectionExpression="#n, tree.b[2], arr[1]", ExpressionAttributeNames={"#n": "name"},
                   ExpressionAttributeValues={":p": {"N": "50"}, ":t": {"S": "blue"}})
    assert out["Count"] == 1 and out["ScannedCount"] == 2
    assert out["Items"] == [{"name": {"S": "widget"}, "tree": {"M": {"b": {"L": [{"M": {"c": {"S": "deep"}}}]}}},
                             "arr": {"L": [{"S": "b"}]}}]


def test_conditional_counter_is_atomic(kynamo: Any) -> None:  # noqa: F811
    """Concurrent conditional increments: exactly the allowed number succeed."""
    from concurrent.futures import ThreadPoolExecutor

    client = kynamo.client()
    client.put_item(TableName=T, Item={"pk": {"S": "ctr"}, "n": {"N": "0"}})

    def bump(_: int) -> bool:
        try:
            client.update_item(TableName=T, Key={"pk": {"S": "ctr"}}, UpdateExpression="SET n = n + :one",
                               ConditionExpression="n < :max",
                               ExpressionAttributeValues={":one": {"N": "1"}, ":max": {"N": "10"}})
            return True
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(bump, range(30)))
    assert sum(results) == 10
    final = client.get_item(TableName=T, Key={"pk": {"S": "ctr"}}, ConsistentRead=True)["Item"]["n"]
    assert final == {"N": "10"}
