"""Every attribute type and the limits around keys and numbers, through boto3."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "types"


@pytest.fixture(scope="module", autouse=True)
def tables(ddb: Any) -> None:  # noqa: F811
    make_table(ddb, T)
    make_table(ddb, "types-n", sk_type="N")
    make_table(ddb, "types-b", pk_type="B", sk_type="B")


def test_every_type_round_trips(ddb: Any) -> None:  # noqa: F811
    item = {
        "pk": {"S": "all"}, "sk": {"S": "types"},
        "s": {"S": "héllo ✓"}, "empty": {"S": ""}, "n": {"N": "-12.5"}, "b": {"B": b"\x00\x01\xfe"},
        "eb": {"B": b""}, "t": {"BOOL": True}, "f": {"BOOL": False}, "null": {"NULL": True},
        "m": {"M": {"inner": {"L": [{"N": "1"}, {"M": {}}, {"L": []}]}}},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"x", b"y"]},
    }
    ddb.put_item(TableName=T, Item=item)
    got = ddb.get_item(TableName=T, Key={"pk": {"S": "all"}, "sk": {"S": "types"}}, ConsistentRead=True)["Item"]
    for name in ("ss", "ns", "bs"):
        kind = next(iter(item[name]))
        assert sorted(got.pop(name)[kind]) == sorted(item.pop(name)[kind])
    assert got == item


@pytest.mark.parametrize(
    ("given", "returned"),
    [
        ("1.50", "1.5"), ("1e2", "100"), ("-0", "0"), ("0.000", "0"), ("+7", "7"),
        ("9" * 38, "9" * 38), ("1E+125", "1" + "0" * 125), ("1e-130", "0." + "0" * 129 + "1"),
        ("-12345678901234567890.123456789012345678", "-12345678901234567890.123456789012345678"),
    ],
)
def test_numbers_normalised(ddb: Any, given: str, returned: str) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={"pk": {"S": "num"}, "sk": {"S": given}, "v": {"N": given}})
    got = ddb.get_item(TableName=T, Key={"pk": {"S": "num"}, "sk": {"S": given}})["Item"]["v"]["N"]
    assert Decimal(got) == Decimal(returned)
    assert got == returned


def test_number_sort_keys_order_numerically(ddb: Any) -> None:  # noqa: F811
    values = ["-1e10", "-100", "-2.5", "-0.001", "0", "0.001", "1", "2.5", "10", "100", "1e10", "123456789.5"]
    for v in values:
        ddb.put_item(TableName="types-n", Item={"pk": {"S": "o"}, "sk": {"N": v}})
    out = ddb.query(TableName="types-n", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "o"}})
    got = [Decimal(i["sk"]["N"]) for i in out["Items"]]
    assert got == sorted(Decimal(v) for v in values)


def test_string_and_binary_keys_order_by_bytes(ddb: Any) -> None:  # noqa: F811
    strings = ["a", "B", "aa", "ä", "z", "Z", "0", "日本"]
    for s in strings:
        ddb.put_item(TableName=T, Item={"pk": {"S": "ord"}, "sk": {"S": s}})
    out = ddb.query(TableName=T, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "ord"}})
    assert [i["sk"]["S"] for i in out["Items"]] == sorted(strings, key=lambda s: s.encode())
    blobs = [b"\x00", b"\x00\x00", b"\x01", b"\xff", b"\x7f\xff", b"a"]
    for b in blobs:
        ddb.put_item(TableName="types-b", Item={"pk": {"B": b"k"}, "sk": {"B": b}})
    out = ddb.query(TableName="types-b", KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": {"B": b"k"}})
    assert [i["sk"]["B"] for i in out["Items"]] == sorted(blobs)
    out = ddb.query(TableName="types-b", KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
                    ExpressionAttributeValues={":p": {"B": b"k"}, ":b": {"B": b"\x00"}})
    assert [i["sk"]["B"] for i in out["Items"]] == [b"\x00", b"\x00\x00"]


def test_key_size_limits(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item={"pk": {"S": "h" * 2048}, "sk": {"S": "r" * 1024}})
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=T, Item={"pk": {"S": "h"}, "sk": {"S": "r" * 1025}})
    assert "range keys has exceeded the size limit of 1024 bytes" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName="types-b", Item={"pk": {"B": b""}, "sk": {"B": b"x"}})
    assert "empty binary value" in err.value.response["Error"]["Message"]


def test_resource_types(kynamo: LocalKynamo) -> None:  # noqa: F811
    table = kynamo.resource().Table(T)
    item = {"pk": "res", "sk": "1", "i": 7, "d": Decimal("0.1"), "bin": b"\x00x", "bools": [True, False, None],
            "set": {1, 2, 3}, "strs": {"x"}, "nested": {"a": {"b": {"c": ["deep"]}}}}
    table.put_item(Item=item)
    got = table.get_item(Key={"pk": "res", "sk": "1"}, ConsistentRead=True)["Item"]
    got["bin"] = bytes(got["bin"])
    assert got == item


def test_nesting_at_limit(ddb: Any) -> None:  # noqa: F811
    v: dict[str, Any] = {"S": "leaf"}
    for _ in range(31):
        v = {"M": {"k": v}}
    ddb.put_item(TableName=T, Item={"pk": {"S": "deep"}, "sk": {"S": "32"}, "v": v})
    assert ddb.get_item(TableName=T, Key={"pk": {"S": "deep"}, "sk": {"S": "32"}})["Item"]["v"] == v
    with pytest.raises(ClientError) as err:
        ddb.put_item(TableName=T, Item={"pk": {"S": "deep"}, "sk": {"S": "33"}, "v": {"L": [v]}})
    assert "Nesting Levels have exceeded supported limits" in err.value.response["Error"]["Message"]
