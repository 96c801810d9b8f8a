"""BatchGetItem and BatchWriteItem through boto3, across partitions and tables."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from router_env import LocalKynamo, ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
A, B = "batch-a", "batch-b"


@pytest.fixture(scope="module", autouse=True)
def tables(ddb: Any) -> None:  # noqa: F811
    make_table(ddb, A, sk=None, wcu=3000)
    make_table(ddb, B, sk="n", sk_type="N")


def test_write_then_get_across_tables(ddb: Any) -> None:  # noqa: F811
    puts = [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}}} for i in range(20)]
    puts += [{"PutRequest": {"Item": {"pk": {"S": "x"}, "n": {"N": str(i)}}}} for i in range(5)]
    out = ddb.batch_write_item(RequestItems={A: puts[:20], B: puts[20:]}, ReturnConsumedCapacity="TOTAL")
    assert out["UnprocessedItems"] == {}
    assert {c["TableName"]: c["CapacityUnits"] for c in out["ConsumedCapacity"]} == {A: 20.0, B: 5.0}
    keys_a = [{"pk": {"S": f"k{i}"}} for i in range(20)] + [{"pk": {"S": "missing"}}]
    keys_b = [{"pk": {"S": "x"}, "n": {"N": str(i)}} for i in range(5)]
    got = ddb.batch_get_item(RequestItems={A: {"Keys": keys_a, "ProjectionExpression": "v"},
                                           B: {"Keys": keys_b, "ConsistentRead": True}})
    assert got["UnprocessedKeys"] == {}
    assert sorted(int(i["v"]["N"]) for i in got["Responses"][A]) == list(range(20))
    assert all(set(i) == {"v"} for i in got["Responses"][A])
    assert len(got["Responses"][B]) == 5


def test_batch_delete(ddb: Any) -> None:  # noqa: F811
    ddb.batch_write_item(RequestItems={A: [{"PutRequest": {"Item": {"pk": {"S": f"d{i}"}}}} for i in range(10)]})
    deletes = [{"DeleteRequest": {"Key": {"pk": {"S": f"d{i}"}}}} for i in range(10)]
    out = ddb.batch_write_item(RequestItems={A: deletes})
    assert out["UnprocessedItems"] == {}
    got = ddb.batch_get_item(RequestItems={A: {"Keys": [{"pk": {"S": f"d{i}"}} for i in range(10)]}})
    assert got["Responses"][A] == []


def test_resource_batch_writer(kynamo: LocalKynamo) -> None:  # noqa: F811
    table = kynamo.resource().Table(A)
    with table.batch_writer() as w:
        for i in range(60):
            w.put_item(Item={"pk": f"bw{i}", "i": i})
    assert table.get_item(Key={"pk": "bw59"})["Item"]["i"] == 59


@pytest.mark.parametrize(
    ("request_items", "fragment"),
    [
        ({A: [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}}}} for i in range(26)]}, "length less than or equal to 25"),
        ({A: [{"PutRequest": {"Item": {"pk": {"S": "dup"}}}}, {"DeleteRequest": {"Key": {"pk": {"S": "dup"}}}}]},
         "duplicates"),
        ({A: [{"PutRequest": {"Item": {"nokey": {"S": "x"}}}}]}, "Missing the key pk"),
        ({A: [{"DeleteRequest": {"Key": {"pk": {"N": "1"}}}}]}, "does not match the schema"),
    ],
)
def test_batch_write_errors(ddb: Any, request_items: dict[str, Any], fragment: str) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        ddb.batch_write_item(RequestItems=request_items)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in err.value.response["Error"]["Message"]


def test_batch_get_errors(ddb: Any) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        ddb.batch_get_item(RequestItems={A: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(101)]}})
    assert "Too many items requested" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        ddb.batch_get_item(RequestItems={A: {"Keys": [{"pk": {"S": "a"}}, {"pk": {"S": "a"}}]}})
    assert "duplicates" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        ddb.batch_get_item(RequestItems={"no-such-table": {"Keys": [{"pk": {"S": "a"}}]}})
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_unprocessed_when_partition_unreachable(tmp_path: Any) -> None:
    """With two of three zones down no partition has a quorum: the keys come back unprocessed."""
    env = LocalKynamo(tmp_path / "data", extra_env={"KYNAMO_STORAGE_TIMEOUT": "2"})
    env.start()
    try:
        c = env.client(retries=1)
        make_table(c, "fragile", sk=None)
        c.put_item(TableName="fragile", Item={"pk": {"S": "a"}})
        nodes = _storage_pids(env)
        assert len(nodes) == 3
        for pid in nodes[:2]:
            os.kill(pid, signal.SIGSTOP)
        try:
            out = c.batch_write_item(RequestItems={"fragile": [{"PutRequest": {"Item": {"pk": {"S": "b"}}}}]})
            assert out["UnprocessedItems"]["fragile"] == [{"PutRequest": {"Item": {"pk": {"S": "b"}}}}]
        finally:
            for pid in nodes[:2]:
                os.kill(pid, signal.SIGCONT)
    finally:
        env.stop()


def _storage_pids(env: LocalKynamo) -> list[int]:
    """Children of the `kynamo local` process (its storage nodes), found through /proc."""
    assert env.proc is not None
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == env.proc.pid:
            pids.append(int(entry))
    return sorted(pids)

