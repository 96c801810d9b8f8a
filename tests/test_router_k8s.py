"""`kynamo router --routing-source kubernetes` against kmock's API emulator and real storage nodes.

The emulator (`tests/kube_emulator.py`) is a real HTTP server in the test's event loop;
the routers are real subprocesses with a kubeconfig pointing at it. The ConfigMaps and
`Table` resources are written by hand, as the operator would, so only the router is
under test: routing follows a new ConfigMap version, table metadata comes from the
Table, CreateTable makes a Table, and the GAC moves with its Lease.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import boto3
import pytest
import pytest_asyncio
from botocore.config import Config

from tests.kube_emulator import Emulator
from tests.router_env import KubeRouter
from tests.storage_cluster import Cluster, http_json

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator)]
NS = "kyn"
TABLES = "apis/kynamo.io/v1alpha1"
KS = {"pk": "pk", "pk_type": "S", "sk": "sk", "sk_type": "S"}


def table_cr(name: str, *, wcu: int | None = None, phase: str = "ACTIVE") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tableName": name,
        "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"},
                                 {"attributeName": "sk", "attributeType": "S"}],
        "keySchema": [{"attributeName": "pk", "keyType": "HASH"}, {"attributeName": "sk", "keyType": "RANGE"}],
        "billingMode": "PAY_PER_REQUEST" if wcu is None else "PROVISIONED",
    }
    if wcu is not None:
        spec["provisionedThroughput"] = {"readCapacityUnits": 100, "writeCapacityUnits": wcu}
    return {"apiVersion": "kynamo.io/v1alpha1", "kind": "Table", "metadata": {"name": name, "namespace": NS},
            "spec": spec, "status": {"phase": phase, "tableId": f"id-{name}", "partitions": 1, "routingVersion": 1}}


def routing_cm(name: str, version: int, replicas: list[str], leader: str | None = None) -> dict[str, Any]:
    doc = {"table": name, "version": version, "key_schema": KS,
           "partitions": [{"id": "p1", "start": "", "end": None, "epoch": 1, "replicas": replicas,
                           "log_replicas": [], "leader": leader}]}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"kynamo-routing-{name}", "namespace": NS,
                         "labels": {"kynamo.io/table": name, "kynamo.io/routing-version": str(version)}},
            "data": {"routing.json": json.dumps(doc)}}


class Api:
    """The emulator over HTTP, as kubectl would write to it."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def create(self, path: str, obj: dict[str, Any]) -> None:
        async with self.http.post(f"{self.base}/{path}/namespaces/{NS}/{path_plural(obj)}", json=obj) as r:
            assert r.status < 300, await r.text()

    async def patch(self, path: str, plural: str, name: str, patch: dict[str, Any]) -> None:
        async with self.http.patch(f"{self.base}/{path}/namespaces/{NS}/{plural}/{name}", json=patch,
                                   headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300, await r.text()

    async def get(self, path: str, plural: str, name: str) -> dict[str, Any] | None:
        async with self.http.get(f"{self.base}/{path}/namespaces/{NS}/{plural}/{name}") as r:
            return await r.json() if r.status == 200 else None


def path_plural(obj: dict[str, Any]) -> str:
    return {"ConfigMap": "configmaps", "Table": "tables", "Lease": "leases"}[obj["kind"]]


@pytest_asyncio.fixture()
async def kube(kmock, tmp_path):
    kmock.resources.load_bundled()
    r = kmock.resources["kynamo.io/v1alpha1/tables"]
    r.kind, r.namespaced = "Table", True
    r.verbs = {"list", "watch", "get", "create", "patch", "delete"}
    r.subresources = {"status"}
    base = str(kmock.url).rstrip("/")
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "t",
                               "clusters": [{"name": "t", "cluster": {"server": base}}],
                               "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                               "users": [{"name": "u", "user": {"token": "x"}}]}))
    async with aiohttp.ClientSession() as http:
        yield Api(http, base), cfg


@pytest.fixture()
def nodes(tmp_path):
    (tmp_path / "nodes").mkdir()
    cluster = Cluster(tmp_path / "nodes", 4)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def eventually(check, timeout: float = 20.0):
    deadline = time.time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, KeyError):
            if time.time() > deadline:
                raise
        await asyncio.sleep(0.2)


def item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"user-{i % 3}"}, "sk": {"S": f"{i:04d}"}, "n": {"N": str(i)}}


async def test_router_follows_configmaps_and_tables(kube, nodes, tmp_path):
    api, kubeconfig = kube
    group = nodes.nodes[:3]
    nodes.create_partition("p1", group, key_schema=KS)
    leader = nodes.leader("p1")
    await api.create(TABLES, table_cr("music"))
    await api.create("api/v1", routing_cm("music", 1, [n.member for n in group]))

    router = KubeRouter(tmp_path, NS, kubeconfig=kubeconfig)
    try:
        await router.ready()
        ddb = router.client()
        names = await asyncio.to_thread(ddb.list_tables)
        assert names["TableNames"] == ["music"]
        desc = (await asyncio.to_thread(ddb.describe_table, TableName="music"))["Table"]
        assert desc["TableStatus"] == "ACTIVE" and desc["TableId"] == "id-music"
        assert desc["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}]
        for i in range(30):
            await asyncio.to_thread(ddb.put_item, TableName="music", Item=item(i))
        got = await asyncio.to_thread(ddb.get_item, TableName="music", Key={"pk": {"S": "user-1"}, "sk": {"S": "0004"}},
                                      ConsistentRead=True)
        assert got["Item"]["n"] == {"N": "4"}
        q = await asyncio.to_thread(ddb.query, TableName="music", KeyConditionExpression="pk = :p",
                                    ExpressionAttributeValues={":p": {"S": "user-0"}}, ConsistentRead=True)
        assert q["Count"] == 10

        # Replace a follower with the fourth node, publish routing version 2, then lose the old
        # follower and the old leader: the partition lives on the new members only.
        spare = nodes.nodes[3]
        follower = next(n for n in group if n is not leader)
        st = nodes.status(leader, "p1")
        assert st is not None
        await asyncio.to_thread(http_json, "PUT", f"http://{spare.api}/v1/partitions/p1",
                                {"table": "t", "key_schema": KS, "epoch": 1,
                                 "replicas": [*st["replicas"], spare.member], "log_replicas": []})
        await asyncio.to_thread(nodes.membership, "p1", "add", spare.member)
        await asyncio.to_thread(nodes.membership, "p1", "remove", follower.member)
        members = [n.member for n in group if n is not follower] + [spare.member]
        await api.patch("api/v1", "configmaps", "kynamo-routing-music",
                        {"metadata": {"labels": {"kynamo.io/routing-version": "2"}},
                         "data": routing_cm("music", 2, members)["data"]})

        async def routed_v2() -> None:
            assert "routing of music: version 2" in router.log.read_text()

        published = time.time()
        await eventually(routed_v2, 10)
        assert time.time() - published < 1.5  # by the watch, not the 2 s resync
        follower.kill9()
        for i in range(30, 35):
            await asyncio.to_thread(ddb.put_item, TableName="music", Item=item(i))
        leader.kill9()  # the survivors (one of them known only from version 2) elect a new leader
        survivors = [n for n in nodes.nodes if n not in (follower, leader)]
        await asyncio.to_thread(lambda: nodes.leader("p1", timeout=15, among=survivors))
        for i in range(35, 40):
            await asyncio.to_thread(ddb.put_item, TableName="music", Item=item(i))
        q = await asyncio.to_thread(ddb.query, TableName="music", KeyConditionExpression="pk = :p",
                                    ExpressionAttributeValues={":p": {"S": "user-1"}}, ConsistentRead=True)
        assert q["Count"] == len([i for i in range(40) if i % 3 == 1])

        # An older version published late does not move routing back.
        await api.patch("api/v1", "configmaps", "kynamo-routing-music",
                        {"data": routing_cm("music", 1, [n.member for n in group])["data"]})
        await asyncio.sleep(1.0)
        got = await asyncio.to_thread(ddb.get_item, TableName="music", Key={"pk": {"S": "user-0"}, "sk": {"S": "0033"}},
                                      ConsistentRead=True)
        assert got["Item"]["n"] == {"N": "33"}

        # CreateTable / UpdateTable / DeleteTable become Table resources for the operator.
        await asyncio.to_thread(
            ddb.create_table, TableName="Orders_2024", BillingMode="PROVISIONED",
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 7},
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
        made = await eventually(lambda: _found(api, "orders-2024-"), 5)
        assert made["spec"]["tableName"] == "Orders_2024"
        assert made["spec"]["provisionedThroughput"] == {"readCapacityUnits": 5, "writeCapacityUnits": 7}
        desc = (await asyncio.to_thread(ddb.describe_table, TableName="Orders_2024"))["Table"]
        assert desc["TableStatus"] == "CREATING"
        await api.patch(TABLES, "tables", made["metadata"]["name"], {"status": {"phase": "ACTIVE"}})

        async def active() -> None:
            d = (await asyncio.to_thread(ddb.describe_table, TableName="Orders_2024"))["Table"]
            assert d["TableStatus"] == "ACTIVE"

        await eventually(active, 5)
        await asyncio.to_thread(ddb.update_table, TableName="Orders_2024",
                                ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 9})
        patched = await api.get(TABLES, "tables", made["metadata"]["name"])
        assert patched is not None and patched["spec"]["provisionedThroughput"]["writeCapacityUnits"] == 9
        await asyncio.to_thread(ddb.delete_table, TableName="Orders_2024")
        assert await api.get(TABLES, "tables", made["metadata"]["name"]) is None
    finally:
        router.stop()


async def _found(api: Api, prefix: str) -> dict[str, Any]:
    async with api.http.get(f"{api.base}/{TABLES}/namespaces/{NS}/tables") as r:
        items = (await r.json())["items"]
    found = [t for t in items if t["metadata"]["name"].startswith(prefix)]
    assert found, items
    return found[0]


async def metric(router: KubeRouter, name: str) -> float:
    def read() -> str:
        with urllib.request.urlopen(router.endpoint + "/metrics", timeout=5) as resp:
            return resp.read().decode()

    text = await asyncio.to_thread(read)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


async def _grant(router: KubeRouter) -> int:
    body = {"router": "probe", "table": "id-x", "kind": "write", "rate": 1, "want": 0, "burst": 1}

    def post() -> int:
        req = urllib.request.Request(router.endpoint + "/kynamo/v1/gac/grant", data=json.dumps(body).encode(),
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(post)


async def test_gac_lease_moves_to_the_surviving_router(kube, nodes, tmp_path):
    api, kubeconfig = kube
    group = nodes.nodes[:3]
    nodes.create_partition("p1", group, key_schema=KS)
    await api.create(TABLES, table_cr("capped", wcu=5))
    await api.create("api/v1", routing_cm("capped", 1, [n.member for n in group]))
    lease = ("apis/coordination.k8s.io/v1", "leases", "kynamo-router-gac")
    flags = ("--lease-duration", "3", "--burst-seconds", "1")
    first = KubeRouter(tmp_path, NS, *flags, name="first", kubeconfig=kubeconfig)
    second: KubeRouter | None = None
    try:
        await first.ready()

        async def held_by_first() -> None:
            doc = await api.get(*lease)
            assert doc is not None and doc["spec"]["holderIdentity"] == first.identity

        await eventually(held_by_first, 10)
        second = KubeRouter(tmp_path, NS, *flags, name="second", kubeconfig=kubeconfig)
        await second.ready()
        assert await _grant(first) == 200 and await _grant(second) == 503  # only the holder serves the GAC
        ddb = second.client()
        for i in range(5):  # admitted through the first router's GAC
            await asyncio.to_thread(ddb.put_item, TableName="capped", Item=item(i))
        assert await metric(first, "kynamo_router_gac_grants_total") > 0
        assert await metric(second, "kynamo_router_gac_received_units_total") > 0

        killed = time.time()
        first.proc.kill()
        first.proc.wait()

        async def held_by_second() -> None:
            doc = await api.get(*lease)
            assert doc is not None and doc["spec"]["holderIdentity"] == second.identity

        await eventually(held_by_second, 10)
        took = time.time() - killed
        assert took < 3 + 1.5, took  # within the lease duration (plus one poll)
        assert await _grant(second) == 200

        # Admission still works: the rate is enforced (5 WCU, 1 s of burst) by the new holder's GAC.
        errors = await metric(second, "kynamo_router_gac_errors_total")
        raw = boto3.client("dynamodb", endpoint_url=second.endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x",
                           config=Config(retries={"max_attempts": 1}))
        # 40 concurrent puts, so the outcome does not hang on how fast one put is on a busy machine.
        def put(i: int) -> bool:
            try:
                raw.put_item(TableName="capped", Item=item(100 + i))
                return True
            except raw.exceptions.ProvisionedThroughputExceededException:
                return False

        start = time.time()
        with ThreadPoolExecutor(40) as pool:
            outcomes = await asyncio.to_thread(lambda: list(pool.map(put, range(40))))
        elapsed = time.time() - start
        ok, throttled = outcomes.count(True), outcomes.count(False)
        assert ok >= 5 and throttled > 0, (ok, throttled)
        assert ok <= 5 * elapsed + 5 + 3, (ok, throttled, elapsed)  # the rate, 1 s of burst, a little slack
        assert await metric(second, "kynamo_router_gac_errors_total") == errors  # not degraded mode

        # A holder that stops cleanly releases the Lease: a waiting router takes over at once.
        third = KubeRouter(tmp_path, NS, *flags, name="third", kubeconfig=kubeconfig)
        try:
            await third.ready()
            stopped = time.time()
            await asyncio.to_thread(second.stop)

            async def held_by_third() -> None:
                doc = await api.get(*lease)
                assert doc is not None and doc["spec"].get("holderIdentity") == third.identity

            await eventually(held_by_third, 10)
            assert time.time() - stopped < 3, time.time() - stopped  # sooner than the lease duration
        finally:
            third.stop()
    finally:
        first.stop()
        if second is not None:
            second.stop()
