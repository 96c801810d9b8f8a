"""The operator against kmock's Kubernetes API emulator, in the test's own event loop.

A fake kubelet marks pods Running/Ready; a fake storage-node admin API answers the
operator's bootstrap, status and membership calls, so the repair path runs end to end
through the Kubernetes objects and the API calls the operator makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes.config import kube_config

os.environ.setdefault("KYNAMO_INTERVAL", "0.5")

import kopf
from kynamo.operator import handlers

from tests.kube_emulator import Emulator

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator)]
NS = "ns1"
ZONES = ["z1", "z2", "z3"]
TABLE = {
    "apiVersion": "kynamo.io/v1alpha1", "kind": "Table",
    "metadata": {"name": "orders", "namespace": NS},
    "spec": {
        "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"}],
        "keySchema": [{"attributeName": "pk", "keyType": "HASH"}],
        "billingMode": "PROVISIONED",
        "provisionedThroughput": {"readCapacityUnits": 100, "writeCapacityUnits": 1500},
    },
}


class FakeStorage:
    """The admin API of every storage node (all pods resolve to it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.hot: set[str] = set()  # partitions whose load endpoint reports sustained writes
        self.since: dict[str, float] = {}  # when each hot partition's load began
        # Per-pod leaders, for tests that reach pods at their own IPs (the test kubelet gives each its
        # own 127.0.0.x): a partition's pod in zone z1 leads until a handover; else every pod says it leads.
        self.per_pod = False
        self.pod_ips: dict[str, str] = {}  # pod name -> IP, kept by the test kubelet
        self.pod_zones: dict[str, str] = {}  # pod name -> zone, kept by the test kubelet
        self.leaders: dict[str, str] = {}  # partition -> leading pod's IP
        self.handed: list[tuple[str, str]] = []  # (partition, pod) of every handover that took place

    def load(self, pid: str) -> dict[str, Any]:
        hot = pid in self.hot
        keys = [bytes([0x10 * i]) + b"\x00" * 7 for i in range(1, 9)]
        now = asyncio.get_running_loop().time()
        since = self.since.setdefault(pid, now) if hot else now  # a leader's total counts from zero
        return {"wcu": (now - since) * 5000, "rcu": 0.0,
                "distribution": [[k.hex(), 1.0] for k in keys] if hot else [], "recent": [],
                "item_count": 0, "size_bytes": 0, "epoch": 1, "is_leader": True, "frozen": False}

    def leads(self, pid: str, ip: str) -> bool:
        if not self.per_pod:
            return True
        if pid not in self.leaders:
            first = [n for n, z in self.pod_zones.items() if z == ZONES[0] and n.rsplit("-", 1)[0] == pid]
            if not first:
                return False
            self.leaders[pid] = self.pod_ips[first[0]]
        return self.leaders[pid] == ip

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path, body))
        ip = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        parts = request.path.split("/")
        if request.method == "GET" and request.path.endswith("/load"):
            return web.json_response(self.load(parts[3]))
        if request.method == "GET":
            return web.json_response({"is_leader": len(parts) < 4 or self.leads(parts[3], ip),
                                      "commit_index": 10, "applied_index": 10})
        if request.method == "POST" and request.path.endswith("/handover"):
            to = self.pod_ips.get(body["to"].split(".", 1)[0])
            if not (self.per_pod and to and self.leads(parts[3], ip)):
                return web.json_response({"error": "NotLeader"}, status=409)
            self.leaders[parts[3]] = to
            self.handed.append((parts[3], body["to"].split(".", 1)[0]))
            return web.json_response({"handed_over": True})
        return web.json_response({})


@pytest_asyncio.fixture()
async def storage():
    fake = FakeStorage()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)  # every 127.0.0.x: pods have IPs of their own
    await site.start()
    fake.port = site._server.sockets[0].getsockname()[1]
    yield fake
    await runner.cleanup()


@pytest_asyncio.fixture()
async def cluster(kmock, tmp_path, monkeypatch, storage):
    kmock.resources.load_bundled()
    for plural, kind in (("tables", "Table"), ("partitions", "Partition")):
        r = kmock.resources[f"kynamo.io/v1alpha1/{plural}"]
        r.kind, r.namespaced = kind, True
        r.verbs = {"list", "watch", "get", "create", "patch", "delete"}
        r.subresources = {"status"}
    for i, z in enumerate(ZONES):
        kmock.objects["v1/nodes", None, f"node-{i}"] = {"metadata": {
            "name": f"node-{i}", "uid": f"n{i}", "labels": {"topology.kubernetes.io/zone": z}}}
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "t",
                               "clusters": [{"name": "t", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                               "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                               "users": [{"name": "u", "user": {"token": "x"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    # the client library reads KUBECONFIG once, at import
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cfg))
    monkeypatch.setattr(handlers.CONFIG, "storage_host", "127.0.0.1")
    monkeypatch.setattr(handlers.CONFIG, "storage_port", storage.port)
    monkeypatch.setattr(handlers.CONFIG, "split_window", 1.0)
    monkeypatch.setattr(handlers.CONFIG, "leader_balance", False)  # every pod claims to lead here; see its test
    base = str(kmock.url).rstrip("/")
    async with aiohttp.ClientSession() as http:
        kubelet = asyncio.create_task(fake_kubelet(kmock, http, base, storage.pod_ips, storage.pod_zones))
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True
        stop = asyncio.Event()
        op = asyncio.create_task(kopf.operator(clusterwide=False, namespaces=[NS], standalone=True,
                                               settings=settings, stop_flag=stop))
        await asyncio.sleep(1)
        try:
            yield kmock, http, base
        finally:
            stop.set()
            kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(op, 10)
            with contextlib.suppress(asyncio.CancelledError):
                await kubelet
            await handlers.shut_down()  # kopf skips its cleanup when its shutdown is cut short


def preferred_node(pod: dict[str, Any]) -> str | None:
    """The node a pod's preferred node affinity names (the operator's placement), if any."""
    terms = pod["spec"]["affinity"]["nodeAffinity"].get("preferredDuringSchedulingIgnoredDuringExecution") or []
    for term in terms:
        for expr in term["preference"]["matchExpressions"]:
            if expr["key"] == "kubernetes.io/hostname" and expr["operator"] == "In":
                return expr["values"][0]
    return None


async def fake_kubelet(kmock, http: aiohttp.ClientSession, base: str, ips: dict[str, str],
                       zones: dict[str, str]) -> None:
    """Every pod becomes Running and Ready a moment after it is created: on the node its placement
    prefers when that node exists (as the scheduler would put it), else on the first node of its zone."""
    while True:
        await asyncio.sleep(0.2)
        nodes = {name for (res, _, name), obj in list(kmock.objects.items()) if res.plural == "nodes"}
        for (res, ns, name), obj in list(kmock.objects.items()):
            if res.plural != "pods":
                continue
            if obj.deleted or (obj.get("status") or {}).get("phase") == "Running":
                continue
            zone = obj["metadata"]["labels"]["kynamo.io/zone"]
            node = preferred_node(obj)
            ip = ips.setdefault(name, f"127.0.0.{len(ips) + 2}")
            zones[name] = zone
            patch = {"spec": {"nodeName": node if node in nodes else f"node-{ZONES.index(zone)}"}, "status": {
                "phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}
            async with http.patch(f"{base}/api/v1/namespaces/{ns}/pods/{name}", json=patch,
                                  headers={"Content-Type": "application/merge-patch+json"}):
                pass


def live(kmock, plural: str) -> dict[str, dict[str, Any]]:
    return {name: obj.raw for (res, ns, name), obj in list(kmock.objects.items())
            if res.plural == plural and not obj.deleted}


async def eventually(check, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return check()
        except (AssertionError, KeyError, StopIteration):
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def create_table(http, base):
    async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=TABLE) as r:
        assert r.status < 300


async def test_table_becomes_partitions_pods_volumes_budgets_and_routing(cluster, storage):
    kmock, http, base = cluster
    await create_table(http, base)

    def partitions_ready():
        parts = live(kmock, "partitions")
        assert len(parts) == 2  # 1,500 WCU over 1,000 per partition
        assert all((p.get("status") or {}).get("formed") for p in parts.values())
        return parts

    parts = await eventually(partitions_ready)
    pods = live(kmock, "pods")
    assert len(pods) == 6
    for pid in parts:
        mine = [p for p in pods.values() if p["metadata"]["labels"]["kynamo.io/partition"] == pid]
        assert sorted(p["metadata"]["labels"]["kynamo.io/zone"] for p in mine) == ZONES
        for p in mine:
            labels = p["metadata"]["labels"]
            assert labels["kynamo.io/table"] == "orders" and labels["kynamo.io/role"] == "replica"
            req = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            expr = req["nodeSelectorTerms"][0]["matchExpressions"][0]
            assert expr["key"] == "topology.kubernetes.io/zone" and expr["values"] == [labels["kynamo.io/zone"]]
            assert p["spec"]["affinity"]["podAntiAffinity"]
            c = p["spec"]["containers"][0]
            assert c["command"] == ["kynamo", "storage-node"]
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert p["metadata"]["ownerReferences"][0]["kind"] == "Partition"
    pvcs = live(kmock, "persistentvolumeclaims")
    assert set(pvcs) == {f"data-{n}" for n in pods}
    pdbs = live(kmock, "poddisruptionbudgets")
    assert set(pdbs) == set(parts) and all(b["spec"]["minAvailable"] == 2 for b in pdbs.values())
    cm = live(kmock, "configmaps")["kynamo-routing-orders"]
    assert cm["metadata"]["labels"]["kynamo.io/table"] == "orders"
    from kynamo.routing import RoutingTable

    rt = RoutingTable.from_doc(json.loads(cm["data"]["routing.json"]))
    assert rt.table == "orders" and len(rt.partitions) == 2 and rt.version >= 1
    assert all(len(p.replicas) == 3 for p in rt.partitions)
    # the operator bootstrapped every replica on its storage node
    puts = [c for c in storage.calls if c[0] == "PUT" and not c[1].endswith("/limits")]  # limits: admission
    assert {c[1] for c in puts} == {f"/v1/partitions/{pid}" for pid in parts}

    def table_ready():
        t = live(kmock, "tables")["orders"]
        assert t["status"]["phase"] == "ACTIVE"
        conds = {c["type"]: c["status"] for c in t["status"]["conditions"]}
        assert conds == {"Ready": "True", "Progressing": "False", "Degraded": "False"}

    await eventually(table_ready)
    events = live(kmock, "events")
    assert any(e.get("reason") == "PartitionsCreated" for e in events.values())


async def test_a_new_tables_pods_go_to_the_nodes_holding_fewest_replicas(cluster, storage):
    """Two nodes per zone: the second table's replicas go to the nodes the first left empty (placement used
    to count only the new table's own replicas, so every table preferred the same first node of each zone)."""
    kmock, http, base = cluster
    for i, z in enumerate(ZONES, start=len(ZONES)):
        kmock.objects["v1/nodes", None, f"node-{i}"] = {"metadata": {
            "name": f"node-{i}", "uid": f"n{i}", "labels": {"topology.kubernetes.io/zone": z}}}
    small = {"readCapacityUnits": 100, "writeCapacityUnits": 500}  # one partition each

    def nodes_of(table: str) -> set[str]:
        pods = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"]["kynamo.io/table"] == table]
        assert len(pods) == 3 and all(p["spec"].get("nodeName") for p in pods)
        return {p["spec"]["nodeName"] for p in pods}

    for name in ("orders", "users"):
        body = {**TABLE, "metadata": {**TABLE["metadata"], "name": name},
                "spec": {**TABLE["spec"], "provisionedThroughput": small}}
        async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=body) as r:
            assert r.status < 300
        await eventually(lambda name=name: nodes_of(name))
    first, second = nodes_of("orders"), nodes_of("users")
    assert len(first) == len(second) == 3
    assert not first & second, (first, second)


async def test_leaders_are_handed_over_until_every_node_leads_as_many(cluster, storage, monkeypatch):
    """Every partition's replica in zone z1 leads at first: all three on node-0. The operator hands one
    leadership per interval to a less busy node until each node leads one, with an event each time."""
    kmock, http, base = cluster
    monkeypatch.setattr(handlers.CONFIG, "storage_host", None)  # each pod at its own IP
    monkeypatch.setattr(handlers.CONFIG, "leader_balance", True)
    storage.per_pod = True
    body = {**TABLE, "spec": {**TABLE["spec"],
                              "provisionedThroughput": {"readCapacityUnits": 100, "writeCapacityUnits": 2500}}}
    async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=body) as r:
        assert r.status < 300
    node_of_ip: dict[str, str] = {}

    def leader_nodes() -> list[str]:
        parts = live(kmock, "partitions")
        assert len(parts) == 3 and all(p["status"].get("phase") == "ACTIVE" for p in parts.values())
        for pod in live(kmock, "pods").values():
            node_of_ip[pod["status"]["podIP"]] = pod["spec"]["nodeName"]
        return sorted(node_of_ip[storage.leaders[pid]] for pid in parts)

    def balanced() -> list[str]:
        nodes = leader_nodes()
        assert nodes == ["node-0", "node-1", "node-2"], nodes
        return nodes

    await eventually(balanced)
    # From 3-0-0: two moves, to z2 and z3, and none once balanced (a request planned from a leader that
    # had just handed over would be refused by it, and is not counted here).
    assert sorted(storage.pod_zones[pod] for _, pod in storage.handed) == ["z2", "z3"], storage.handed

    def moved_events() -> int:  # kopf posts events from a queue of its own: they may trail the handover
        moved = sum(e.get("reason") == "LeaderMoved" for e in live(kmock, "events").values())
        assert moved == 2, moved
        return moved

    await eventually(moved_events, timeout=10)


async def test_pod_loss_adds_a_log_replica_then_rebuilds(cluster, storage):
    kmock, http, base = cluster
    await create_table(http, base)
    parts = await eventually(lambda: [p for p in live(kmock, "partitions").values()
                                      if (p.get("status") or {}).get("formed")][:1] or next(iter([])))
    pid = parts[0]["metadata"]["name"]
    victim = f"{pid}-1"
    async with http.delete(f"{base}/api/v1/namespaces/{NS}/pods/{victim}") as r:
        assert r.status < 300

    def log_replica_started():
        pods = live(kmock, "pods")
        roles = {n: p["metadata"]["labels"]["kynamo.io/role"] for n, p in pods.items()
                 if p["metadata"]["labels"]["kynamo.io/partition"] == pid}
        assert "log-replica" in roles.values()
        return roles

    roles = await eventually(log_replica_started, timeout=10)
    assert victim not in roles
    # the leader was asked to add the log-replica, then to drop the lost member
    def membership_changes():
        ms = [c[2] for c in storage.calls if c[0] == "POST" and c[1] == f"/v1/partitions/{pid}/membership"]
        assert any(m["action"] == "add" and m["role"] == "log-replica" for m in ms)
        assert any(m["action"] == "remove" and m["member"].startswith(victim + ".") for m in ms)
        return ms

    await eventually(membership_changes)
    events = [e for e in live(kmock, "events").values() if e.get("reason") == "CreateMember"]
    assert events

    def healed():
        part = live(kmock, "partitions")[pid]
        assert part["status"]["repair"] == "healthy"
        pods = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"]["kynamo.io/partition"] == pid]
        assert sorted(p["metadata"]["labels"]["kynamo.io/role"] for p in pods) == ["replica"] * 3
        assert sorted(p["metadata"]["labels"]["kynamo.io/zone"] for p in pods) == ZONES
        ms = membership_changes()
        assert any(m["action"] == "remove" and m["role"] == "log-replica" for m in ms)  # retired

    await eventually(healed)


async def test_table_delete_cleans_up_through_the_finalizer(cluster):
    kmock, http, base = cluster
    await create_table(http, base)
    await eventually(lambda: len(live(kmock, "pods")) == 6 or next(iter([])))
    t = live(kmock, "tables")["orders"]
    assert t["metadata"].get("finalizers")
    async with http.delete(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables/orders") as r:
        assert r.status < 300

    def gone():
        for res in ("tables", "partitions", "pods", "persistentvolumeclaims", "configmaps"):
            assert live(kmock, res) == {}, res

    await eventually(gone)


async def test_sustained_load_splits_a_partition_and_switches_routing(cluster, storage):
    kmock, http, base = cluster
    await create_table(http, base)
    def formed():
        assert len([p for p in live(kmock, "partitions").values() if (p.get("status") or {}).get("formed")]) == 2

    await eventually(formed)
    first = sorted(live(kmock, "partitions").values(), key=lambda p: p["spec"]["start"])[0]
    pid = first["metadata"]["name"]
    storage.hot.add(pid)  # 5,000 WCU/s against a 750 WCU share, over 8 evenly loaded keys

    def split_done():
        ps = live(kmock, "partitions")
        assert ps[pid]["status"]["phase"] == "RETIRED"
        children = [p for p in ps.values() if p["spec"].get("parent") == pid]
        assert len(children) == 2
        return ps, children

    ps, children = await eventually(split_done, timeout=30)
    children.sort(key=lambda p: p["spec"]["start"])
    at = ps[pid]["status"]["split"]["at"]
    assert at == "40" + "00" * 7  # 7 sampled keys in range: 3 left of the cut, 4 right
    assert [c["spec"]["start"] for c in children] == [first["spec"]["start"], at]
    assert [c["spec"].get("end") for c in children] == [at, first["spec"]["end"]]
    assert all(c["spec"]["epoch"] == 2 for c in children)
    # the children start in the parent's pods (the storage nodes seeded them there), then move out
    parent_members = {m["name"] for m in first["spec"]["members"]}
    assert all({m["name"] for m in c["spec"]["members"]} <= parent_members | {
        f"{c['metadata']['name']}-{i}" for i in range(3)} for c in children)
    # adaptive capacity on the load timer: the hot partition may take what its idle sibling leaves
    # (750 + 750, capped at 1,000 WCU); the sibling keeps its share once the hot one's rate is known
    sibling = next(p["metadata"]["name"] for p in ps.values()
                   if p["metadata"]["name"] != pid and not p["spec"].get("parent"))
    pushed = {(c[1].split("/")[3], c[2]["wcu"]) for c in storage.calls if c[0] == "PUT" and c[1].endswith("/limits")}
    assert (pid, 1000) in pushed and (sibling, 750) in pushed, pushed
    posts = [c for c in storage.calls if c[0] == "POST" and c[1] == f"/v1/partitions/{pid}/split"]
    assert posts and posts[0][2]["at"] == at and posts[0][2]["epoch"] == 2
    assert [x["partition_id"] for x in posts[0][2]["children"]] == [c["metadata"]["name"] for c in children]

    def routed():
        cm = live(kmock, "configmaps")["kynamo-routing-orders"]
        doc = json.loads(cm["data"]["routing.json"])
        ids = [p["id"] for p in doc["partitions"]]
        assert pid not in ids and all(c["metadata"]["name"] in ids for c in children)
        assert len(ids) == 3
        return doc

    await eventually(routed)

    def parent_dropped():
        deletes = [c for c in storage.calls if c[0] == "DELETE" and c[1] == f"/v1/partitions/{pid}"]
        assert len(deletes) == 3
        assert live(kmock, "partitions")[pid]["status"].get("replicasDropped")

    await eventually(parent_dropped)

    def moving():  # each child starts pods of its own and adds them to its group through its leader
        for c in children:
            cid = c["metadata"]["name"]
            own = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"]["kynamo.io/partition"] == cid]
            assert len(own) == 3
            assert any(x[0] == "POST" and x[1] == f"/v1/partitions/{cid}/membership" and x[2]["action"] == "add"
                       for x in storage.calls)

    await eventually(moving)
    assert any(e.get("reason") == "Split" for e in live(kmock, "events").values())


async def test_on_demand_table_records_its_peak(cluster, storage):
    """The load timer writes an on-demand table's table-wide peak rate into its status."""
    kmock, http, base = cluster
    table = json.loads(json.dumps(TABLE))
    table["metadata"]["name"] = "events"
    table["spec"]["billingMode"] = "PAY_PER_REQUEST"
    del table["spec"]["provisionedThroughput"]
    async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=table) as r:
        assert r.status < 300

    def formed():
        parts = [p for p in live(kmock, "partitions").values()
                 if p["spec"]["table"] == "events" and (p.get("status") or {}).get("formed")]
        assert parts
        return parts[0]

    part = await eventually(formed)
    storage.hot.add(part["metadata"]["name"])  # 5,000 WCU/s

    def peak():
        doc = live(kmock, "tables")["events"]
        return doc["status"]["peak"]

    recorded = await eventually(peak, timeout=30)
    assert 4000 <= recorded["wcu"] <= 6000, recorded
