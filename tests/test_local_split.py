"""`kynamo local` splits a partition under sustained load, end to end with boto3.

Small thresholds (--split-wcu 20 units/s for --split-window 2 s, load read every 0.5 s) make
a few writer threads enough: the hot item collection is cut where the sampled load balances,
routing switches to the two children, the parent is retired, every acknowledged write reads
back, and a Query over the collection returns every item from both sides of the split point.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.router_env import LocalKynamo
from tests.storage_cluster import http_json

TABLE = "Hot"


def table_meta(data: Path) -> dict[str, Any]:
    doc = json.loads((data / "control" / "tables.json").read_text())
    return next(t for t in doc["tables"] if t["name"] == TABLE)


class Writer(threading.Thread):
    def __init__(self, client: Any, pk: str) -> None:
        super().__init__(daemon=True)
        self.client, self.pk = client, pk
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sk = uuid.uuid4().hex
            try:
                item = {"pk": {"S": self.pk}, "sk": {"S": sk}, "pad": {"S": "x" * 100}}
                self.client.put_item(TableName=TABLE, Item=item)
                self.acked.append(sk)
            except Exception:  # a write that failed is simply not acknowledged
                pass


def query_pages(client: Any, pk: str, **extra: Any) -> list[str]:
    out: list[str] = []
    kwargs: dict[str, Any] = {"TableName": TABLE, "KeyConditionExpression": "pk = :p",
                              "ExpressionAttributeValues": {":p": {"S": pk}}, **extra}
    while True:
        page = client.query(**kwargs)
        out.extend(i["sk"]["S"] for i in page["Items"])
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def query_all(client: Any, pk: str) -> set[str]:
    return set(query_pages(client, pk))


@pytest.fixture(scope="module")
def split_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKynamo, set[str], str]]:
    """One `kynamo local` whose hot partition split under four writer threads."""
    data = tmp_path_factory.mktemp("split") / "data"
    env = LocalKynamo(data, extra_env={"KYNAMO_LOAD_INTERVAL": "0.5", "KYNAMO_SPLIT_WINDOW": "2",
                                       "KYNAMO_SPLIT_WCU": "20"})
    env.start()
    try:
        ddb = env.client(retries=8)
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "S"}])
        ddb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})
        parent = table_meta(data)["partitions"][0]["id"]
        writers = [Writer(env.client(retries=8), "hot") for _ in range(4)]
        for w in writers:
            w.start()
        deadline = time.time() + 60
        while len(table_meta(data)["partitions"]) < 2:
            assert time.time() < deadline, env.log_tail()
            time.sleep(0.2)
        split_at = sum(len(w.acked) for w in writers)
        # both halves serve: writes go on after the switch, to both children of the collection
        while sum(len(w.acked) for w in writers) < split_at + 300:
            assert time.time() < deadline + 30, env.log_tail()
            time.sleep(0.2)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(30)
        # The children may be hot enough to split in turn: let any split under way finish, so the
        # tests read a settled routing table (a split parent is deleted from the nodes soon after).
        # Settled: no split under way, and the same partitions over a few load readings.
        seen: list[str] = []
        while True:
            parts = table_meta(data)["partitions"]
            ids = [p["id"] for p in parts]
            if ids == seen and not any(p.get("splitting") for p in parts):
                break
            assert time.time() < deadline + 60, env.log_tail()
            seen = ids
            time.sleep(2.0)
        yield env, {sk for w in writers for sk in w.acked}, parent
    finally:
        env.stop()


@pytest.mark.timeout(240)
def test_sustained_load_splits_the_hot_partition(split_run: tuple[LocalKynamo, set[str], str]) -> None:
    env, acked, parent = split_run
    data = env.data_dir
    ddb = env.client(retries=8)
    meta = table_meta(data)
    parts = meta["partitions"]
    assert parent not in {p["id"] for p in parts}
    assert all(p["epoch"] > 1 for p in parts)
    # the children cover the parent's range, contiguously
    assert parts[0]["start"] == "" and parts[-1]["end"] is None
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(parts))
    assert "splitting" in env.log_tail(200000)

    # every acknowledged write reads back
    missing = [sk for sk in acked if "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "hot"},
                                                                                       "sk": {"S": sk}})]
    assert not missing, f"{len(missing)} acknowledged writes lost"
    # each child holds part of the collection (the split cut the hot collection where its load balances)
    counts = []
    token = env.tokens()["client"]  # the storage nodes' client token kynamo local generated
    for p in parts:
        host, port, _ = (p.get("leader") or p["replicas"][0]).rsplit(":", 2)
        counts.append(http_json("GET", f"http://{host}:{port}/v1/partitions/{p['id']}", token=token)["item_count"])
    assert sum(1 for c in counts if c > 0) >= 2, counts
    assert sum(counts) >= len(acked)

    # the parent is retired from every storage node
    def parent_gone() -> bool:
        for member in parts[0]["replicas"]:
            host, port, _ = member.rsplit(":", 2)
            listing = http_json("GET", f"http://{host}:{port}/v1/partitions", token=token)["partitions"]
            if parent in {x["partition_id"] for x in listing}:
                return False
        return True

    deadline = time.time() + 20
    while not parent_gone():
        assert time.time() < deadline, "split parent never deleted"
        time.sleep(0.3)

    # a restart keeps the split and the data
    assert env.stop() == 0
    env.start()
    ddb = env.client(retries=8)
    assert len(table_meta(data)["partitions"]) == len(parts)
    sample = sorted(acked)[:: max(1, len(acked) // 200)]
    assert all("Item" in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "hot"}, "sk": {"S": sk}}) for sk in sample)


def test_query_spans_the_split_point(split_run: tuple[LocalKynamo, set[str], str]) -> None:
    env, acked, _ = split_run
    ddb = env.client(retries=8)
    found = query_all(ddb, "hot")
    assert acked <= found, f"{len(acked - found)} acknowledged items missing from the Query"
    # Small pages and the reverse direction cross the split point in order, without repeats.
    forward = query_pages(ddb, "hot", Limit=37)
    backward = query_pages(ddb, "hot", Limit=41, ScanIndexForward=False)
    assert forward == sorted(found) and backward == sorted(found, reverse=True)
