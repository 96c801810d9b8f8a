"""Admission control end to end (issue 6): `kynamo local`, boto3, real storage nodes.

- a partition over the limit pushed to it throttles with ProvisionedThroughputExceededException
  while the other partition of the same table serves every request;
- adaptive capacity: a table of 4 partitions (share 10 WCU each of 40) whose load all lands on
  one partition is still served at about the table's capacity, not at the partition's share;
- on demand: a new table serves its (small, for the test) floor at once, a jump to 3x the floor
  is throttled at first and fully admitted once the peak has caught up (2 s windows);
- two tables on the same nodes: while one is hammered and throttled, the other is never throttled.

Every count is taken over windows of seconds with wide bounds: the machine is shared and slow.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kynamo.keycodec import KeySchema, position
from tests.router_env import LocalKynamo
from tests.storage_cluster import http_json

pytestmark = pytest.mark.slow

THROTTLE = "ProvisionedThroughputExceededException"


def table_meta(data: Path, name: str) -> dict[str, Any]:
    doc = json.loads((data / "control" / "tables.json").read_text())
    return next(t for t in doc["tables"] if t["name"] == name)


def api(member: str) -> str:
    host, port, _ = member.rsplit(":", 2)
    return f"http://{host}:{port}"


def keys_by_partition(meta: dict[str, Any], n: int) -> dict[str, list[str]]:
    """Partition id -> the first `n` partition-key values (`k0`, `k1`, ...) it owns."""
    schema = KeySchema.from_dict(meta["key_schema"])
    out: dict[str, list[str]] = {p["id"]: [] for p in meta["partitions"]}
    i = 0
    while any(len(v) < n for v in out.values()):
        pk = f"k{i}"
        pos = position(schema, {"pk": {"S": pk}})
        for p in meta["partitions"]:
            if pos >= bytes.fromhex(p["start"] or "") and (p["end"] is None or pos < bytes.fromhex(p["end"])):
                if len(out[p["id"]]) < n:
                    out[p["id"]].append(pk)
        i += 1
    return out


def push_limits(env: LocalKynamo, part: dict[str, Any], body: dict[str, Any]) -> None:
    token = env.tokens()["client"]  # the storage nodes' admin API needs kynamo local's client token
    for member in part["replicas"]:
        http_json("PUT", f"{api(member)}/v1/partitions/{part['id']}/limits", body, token=token)


def limits(env: LocalKynamo, part: dict[str, Any]) -> list[dict[str, Any]]:
    token = env.tokens()["client"]
    return [http_json("GET", f"{api(m)}/v1/partitions/{part['id']}/limits", token=token) for m in part["replicas"]]


def router_metric(env: LocalKynamo, name: str, **labels: str) -> float:
    with urllib.request.urlopen(env.endpoint + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def create(client: Any, name: str, *, rcu: int | None = None, wcu: int | None = None) -> None:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    }
    if wcu:
        kwargs["ProvisionedThroughput"] = {"ReadCapacityUnits": rcu or 5, "WriteCapacityUnits": wcu}
    else:
        kwargs["BillingMode"] = "PAY_PER_REQUEST"
    client.create_table(**kwargs)
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})


def outcome(fn: Any, **kwargs: Any) -> str:
    """'ok', 'throttled' or the error code of one call."""
    try:
        fn(**kwargs)
        return "ok"
    except ClientError as err:
        code = err.response["Error"]["Code"]
        return "throttled" if code == THROTTLE else code


class Load(threading.Thread):
    """Sends requests until stopped, recording (monotonic time, outcome) of each.

    `rate` paces it (requests/s; 0: as fast as it goes, pausing briefly after a throttle).
    """

    def __init__(self, env: LocalKynamo, table: str, pks: list[str], *, rate: float = 0.0, read: bool = False) -> None:
        super().__init__(daemon=True)
        self.client = env.client(retries=0)  # no SDK retries: we see every throttle
        self.table, self.pks, self.rate, self.read = table, pks, rate, read
        self.log: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            pk = self.pks[i % len(self.pks)]
            i += 1
            if self.read:
                res = outcome(self.client.get_item, TableName=self.table, Key={"pk": {"S": pk}})
            else:
                res = outcome(self.client.put_item, TableName=self.table, Item={"pk": {"S": pk}, "n": {"N": str(i)}})
            self.log.append((time.monotonic(), res))
            if self.rate:
                next_at += 1 / self.rate
                self.stop.wait(max(0.0, next_at - time.monotonic()))
            elif res == "throttled":
                self.stop.wait(0.005)

    def count(self, what: str, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(1 for t, r in self.log if r == what and start <= t < end)


def run_load(loads: list[Load], seconds: float) -> tuple[float, float]:
    t0 = time.monotonic()
    for load in loads:
        load.start()
    time.sleep(seconds)
    for load in loads:
        load.stop.set()
    for load in loads:
        load.join(30)
    return t0, time.monotonic()


def started(tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]) -> Iterator[LocalKynamo]:
    """A module fixture's body: one `kynamo local` with `env`, stopped when the module is done."""
    k = LocalKynamo(tmp_path_factory.mktemp(name) / "data", extra_env=env)
    k.start()
    try:
        yield k
    finally:
        k.stop()


# ------------------------------------------------------------------ limits pushed by hand


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    # No load loop: the control plane pushes no limits, so the ones this test pushes stay.
    yield from started(tmp_path_factory, "pinned", {"KYNAMO_LOAD_INTERVAL": "0"})


@pytest.mark.timeout(180)
def test_partition_over_its_limit_throttles_and_its_sibling_does_not(pinned: LocalKynamo) -> None:
    ddb = pinned.client(retries=0)  # no SDK retries: every throttle shows
    create(pinned.client(), "Pinned", rcu=6000, wcu=2000)  # 2 partitions: the table buckets never bind
    meta = table_meta(pinned.data_dir, "Pinned")
    hot, cold = meta["partitions"]
    keys = keys_by_partition(meta, 40)
    for part in (hot, cold):  # before any limit: everything is served
        for pk in keys[part["id"]][:5]:
            assert outcome(ddb.put_item, TableName="Pinned", Item={"pk": {"S": pk}}) == "ok"

    push_limits(pinned, hot, {"rcu": 1, "wcu": 1, "burst_seconds": 0})
    assert all(doc["limit"] == {"read": 1, "write": 1} for doc in limits(pinned, hot))
    writes = {p["id"]: [outcome(ddb.put_item, TableName="Pinned", Item={"pk": {"S": pk}})
                        for pk in keys[p["id"]]] for p in (hot, cold)}
    reads = {p["id"]: [outcome(ddb.get_item, TableName="Pinned", Key={"pk": {"S": pk}}, ConsistentRead=True)
                       for pk in keys[p["id"]]] for p in (hot, cold)}
    assert set(writes[cold["id"]]) == {"ok"} and set(reads[cold["id"]]) == {"ok"}
    assert set(writes[hot["id"]]) <= {"ok", "throttled"} and set(reads[hot["id"]]) <= {"ok", "throttled"}
    # 40 requests at 1 unit/s: nearly all refused, unless the 40 took most of a minute
    assert writes[hot["id"]].count("throttled") >= 20, writes[hot["id"]]
    assert reads[hot["id"]].count("throttled") >= 20, reads[hot["id"]]
    assert writes[hot["id"]].count("ok") >= 1  # the bucket's one token, and its refill

    # counted by reason at the router, and at the partition's leader
    assert router_metric(pinned, "kynamo_router_throttled_total", table="Pinned", reason="partition_write") >= 20
    assert router_metric(pinned, "kynamo_router_throttled_total", table="Pinned", reason="partition_read") >= 20
    assert router_metric(pinned, "kynamo_router_throttled_total", table="Pinned", reason="table_write") == 0
    assert sum(doc["throttled"]["write"] for doc in limits(pinned, hot)) >= 20
    assert sum(doc["throttled"]["write"] + doc["throttled"]["read"] for doc in limits(pinned, cold)) == 0

    # lifted: served again
    push_limits(pinned, hot, {"rcu": None, "wcu": None})
    assert all(doc["limit"] == {"read": 3000, "write": 1000} for doc in limits(pinned, hot))
    assert {outcome(ddb.put_item, TableName="Pinned", Item={"pk": {"S": pk}}) for pk in keys[hot["id"]]} == {"ok"}


def test_limits_endpoint_refuses_bad_input(pinned: LocalKynamo) -> None:
    create(pinned.client(), "Bad", wcu=5)
    part = table_meta(pinned.data_dir, "Bad")["partitions"][0]
    url = f"{api(part['replicas'][0])}/v1/partitions/{part['id']}/limits"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {pinned.tokens()['client']}"}
    for body in ({"wcu": -1}, {"rcu": "lots"}, {"wcu": 1, "burst_seconds": 10**6}, [1, 2]):
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 400
        assert json.loads(info.value.read())["error"] == "BadRequest"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(
            f"{api(part['replicas'][0])}/v1/partitions/nope/limits", data=b"{}", method="PUT", headers=headers),
            timeout=10)
    assert info.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as info:  # no client token: refused before anything else
        urllib.request.urlopen(urllib.request.Request(url, data=b'{"wcu": 1}', method="PUT"), timeout=10)
    assert info.value.code == 401


# ------------------------------------------------------------------ adaptive capacity, and two tables


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    # Limits pushed every 0.5 s; 1 s of burst so the table's rate shows within seconds; no splits.
    yield from started(tmp_path_factory, "adaptive", {"KYNAMO_LOAD_INTERVAL": "0.5", "KYNAMO_BURST_SECONDS": "1",
                                                      "KYNAMO_SPLIT_WINDOW": "3600"})


@pytest.mark.timeout(180)
def test_hot_partition_borrows_what_its_siblings_leave(adaptive: LocalKynamo) -> None:
    client = adaptive.client()
    create(client, "Uneven", wcu=4000)  # 4 partitions ...
    client.update_table(TableName="Uneven", ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 40})
    client.get_waiter("table_exists").wait(TableName="Uneven", WaiterConfig={"Delay": 0.2})
    meta = table_meta(adaptive.data_dir, "Uneven")  # ... of 10 WCU each, as DynamoDB keeps them after a decrease
    assert len(meta["partitions"]) == 4 and meta["wcu"] == 40
    hot = meta["partitions"][0]
    deadline = time.time() + 30
    while any(doc["pushed"]["wcu"] is None for doc in limits(adaptive, hot)):  # the control plane pushed limits
        assert time.time() < deadline, adaptive.log_tail()
        time.sleep(0.2)

    loads = [Load(adaptive, "Uneven", keys_by_partition(meta, 50)[hot["id"]]) for _ in range(4)]
    t0, _ = run_load(loads, 9.0)
    ok = sum(load.count("ok", t0 + 3, t0 + 9) for load in loads)
    throttled = sum(load.count("throttled", t0 + 3, t0 + 9) for load in loads)
    rate = ok / 6
    # The hot partition's share is 10 WCU/s; with adaptive capacity it is served at about the table's
    # 40 (held there by the table's own bucket), never far above it.
    assert 20 <= rate <= 40 * 1.5, (rate, throttled)
    assert throttled > 0  # the offered load was over the capacity: the test really measured a limit
    pushed = max(doc["pushed"]["wcu"] for doc in limits(adaptive, hot))
    assert pushed > 20, pushed  # its pushed limit is well over its share of 10


@pytest.mark.timeout(180)
def test_hammering_one_table_never_throttles_another(adaptive: LocalKynamo) -> None:
    client = adaptive.client()
    create(client, "Noisy", rcu=5, wcu=5)
    create(client, "Quiet")  # on demand, same storage nodes
    noisy = [Load(adaptive, "Noisy", [f"n{i}" for i in range(20)]) for _ in range(3)]
    quiet = [Load(adaptive, "Quiet", [f"q{i}" for i in range(20)], rate=20),
             Load(adaptive, "Quiet", [f"q{i}" for i in range(20)], rate=20, read=True)]
    run_load(noisy + quiet, 6.0)
    assert sum(load.count("throttled") for load in noisy) > 50  # Noisy was well over its 5 WCU
    outcomes = [r for load in quiet for _, r in load.log]
    assert len(outcomes) >= 20 and set(outcomes) == {"ok"}, {r: outcomes.count(r) for r in set(outcomes)}
    assert router_metric(adaptive, "kynamo_router_throttled_total", table="Quiet") == 0


# ------------------------------------------------------------------ on demand


@pytest.fixture(scope="module")
def on_demand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    # The control plane reads loads every 0.5 s (it tracks the peak too) but never splits here.
    yield from started(tmp_path_factory, "ondemand", {"KYNAMO_ON_DEMAND_INITIAL_WCU": "20",
                                                      "KYNAMO_ON_DEMAND_WINDOW": "2", "KYNAMO_LOAD_INTERVAL": "0.5",
                                                      "KYNAMO_SPLIT_WINDOW": "3600"})


@pytest.mark.timeout(180)
def test_on_demand_jump_is_absorbed_as_the_peak_catches_up(on_demand: LocalKynamo) -> None:
    create(on_demand.client(), "Spiky")
    # 60 writes/s offered (3x the 20 WRU floor) from three paced writers
    loads = [Load(on_demand, "Spiky", [f"s{i}" for i in range(100)], rate=20) for _ in range(3)]
    t0, t1 = run_load(loads, 16.0)
    first = sum(load.count("throttled", t0, t0 + 2) for load in loads)
    first_ok = sum(load.count("ok", t0, t0 + 2) for load in loads)
    late = sum(load.count("throttled", t1 - 5, t1) for load in loads)
    late_ok = sum(load.count("ok", t1 - 5, t1) for load in loads)
    assert first > 0, (first, first_ok)  # partly throttled at first ...
    assert first_ok <= 20 * 2 + 20 + 10  # ... at the floor (plus the one second an on-demand table holds)
    assert late == 0 and late_ok >= 5 * 20, (late, late_ok)  # ... and fully admitted a few windows later
    assert router_metric(on_demand, "kynamo_router_throttled_total", table="Spiky", reason="table_write") >= first
    assert router_metric(on_demand, "kynamo_router_on_demand_capacity_units", table="Spiky", kind="write") >= 60
    # the control plane saw the peak too (its split threshold for the table is a share of twice it)
    _, peak_wcu = table_meta(on_demand.data_dir, "Spiky")["peak"]
    assert 30 <= peak_wcu <= 200, peak_wcu


@pytest.mark.timeout(180)
def test_batches_return_a_throttled_partitions_requests_as_unprocessed(pinned: LocalKynamo) -> None:
    """DynamoDB: throttled requests of a batch come back unprocessed; all of them throttled is the error."""
    ddb = pinned.client(retries=0)
    create(pinned.client(), "PinnedBatch", rcu=6000, wcu=2000)
    meta = table_meta(pinned.data_dir, "PinnedBatch")
    hot, cold = meta["partitions"]
    keys = keys_by_partition(meta, 30)
    push_limits(pinned, hot, {"rcu": 0.05, "wcu": 0.05, "burst_seconds": 0})  # a token per 20 s
    while outcome(ddb.put_item, TableName="PinnedBatch", Item={"pk": {"S": keys[hot["id"]][29]}}) == "ok":
        pass  # spend the hot partition's token: its balance is now below zero for a while
    while outcome(ddb.get_item, TableName="PinnedBatch", Key={"pk": {"S": keys[hot["id"]][29]}},
                  ConsistentRead=True) == "ok":
        pass

    def put(pk: str) -> dict[str, Any]:
        return {"PutRequest": {"Item": {"pk": {"S": pk}}}}

    hot_keys, cold_keys = keys[hot["id"]][:5], keys[cold["id"]][:5]
    out = ddb.batch_write_item(RequestItems={"PinnedBatch": [put(k) for k in hot_keys + cold_keys]})
    left = {r["PutRequest"]["Item"]["pk"]["S"] for r in out["UnprocessedItems"].get("PinnedBatch", [])}
    assert left == set(hot_keys), out["UnprocessedItems"]
    assert outcome(ddb.batch_write_item, RequestItems={"PinnedBatch": [put(k) for k in hot_keys]}) == "throttled"

    got = ddb.batch_get_item(RequestItems={"PinnedBatch": {
        "Keys": [{"pk": {"S": k}} for k in hot_keys + cold_keys], "ConsistentRead": True}})
    assert {i["pk"]["S"] for i in got["Responses"]["PinnedBatch"]} == set(cold_keys)  # hot: throttled, not absent
    assert {k["pk"]["S"] for k in got["UnprocessedKeys"]["PinnedBatch"]["Keys"]} == set(hot_keys)
    assert outcome(ddb.batch_get_item, RequestItems={"PinnedBatch": {
        "Keys": [{"pk": {"S": k}} for k in hot_keys], "ConsistentRead": True}}) == "throttled"

    push_limits(pinned, hot, {"rcu": None, "wcu": None})  # lifted: the unprocessed writes were never applied
    for pk in hot_keys:
        assert "Item" not in ddb.get_item(TableName="PinnedBatch", Key={"pk": {"S": pk}}, ConsistentRead=True)
