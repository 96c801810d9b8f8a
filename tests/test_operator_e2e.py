"""The real operator, the Kubernetes API emulator and the test kubelet: real storage-node processes.

A Table becomes a Paxos group of three `kynamo storage-node` processes, one per zone; writes go
through the storage client to the members the routing ConfigMap names; a replica Pod is deleted
(its process SIGKILLed) under load, and the operator's repair (log-replica, rebuild, retire) runs
against the real group until every acknowledged write reads back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from botocore.exceptions import BotoCoreError, ClientError
from kubernetes.config import kube_config

os.environ.setdefault("KYNAMO_INTERVAL", "0.5")

import kopf
from kynamo.operator import handlers
from kynamo.operator import metrics as M
from kynamo.operator import resources as R

from kynamo import keycodec
from kynamo.routing import RoutingTable
from kynamo.storage_client import GroupClient, StorageError
from tests.kube_emulator import Emulator
from tests.kubelet import ANNOTATION, Kubelet
from tests.router_env import KubeRouter, stop_process

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator), pytest.mark.slow]
NS = "e2e"
ZONES = ["z1", "z2", "z3"]
TABLE = {
    "apiVersion": "kynamo.io/v1alpha1", "kind": "Table",
    "metadata": {"name": "orders", "namespace": NS},
    "spec": {
        "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"}],
        "keySchema": [{"attributeName": "pk", "keyType": "HASH"}],
        "billingMode": "PROVISIONED",
        "provisionedThroughput": {"readCapacityUnits": 100, "writeCapacityUnits": 100},  # one partition
    },
}


@pytest_asyncio.fixture()
async def cluster(kmock, tmp_path, monkeypatch):
    kmock.resources.load_bundled()
    for plural, kind in (("tables", "Table"), ("partitions", "Partition")):
        r = kmock.resources[f"kynamo.io/v1alpha1/{plural}"]
        r.kind, r.namespaced = kind, True
        r.verbs = {"list", "watch", "get", "create", "patch", "delete"}
        r.subresources = {"status"}
    nodes = {z: f"node-{i}" for i, z in enumerate(ZONES)}
    for z, n in nodes.items():
        kmock.objects["v1/nodes", None, n] = {"metadata": {
            "name": n, "uid": n, "labels": {"topology.kubernetes.io/zone": z}}}
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "t",
                               "clusters": [{"name": "t", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                               "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
                               "users": [{"name": "u", "user": {"token": "x"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cfg))
    monkeypatch.setattr(handlers.CONFIG, "member_address_annotation", ANNOTATION)
    monkeypatch.setattr(handlers.CONFIG, "storage_timeout", 5.0)
    monkeypatch.setattr(handlers.CONFIG, "split_window", 3600.0)  # no splits here
    monkeypatch.setattr(R, "ADDRESSES", {})
    base = str(kmock.url).rstrip("/")
    async with aiohttp.ClientSession() as http:
        kubelet = Kubelet(base, NS, tmp_path / "kubelet", nodes, http, extra_args=["--log-retention", "50"])
        kl = asyncio.create_task(kubelet.run())
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True
        stop = asyncio.Event()
        op = asyncio.create_task(kopf.operator(clusterwide=False, namespaces=[NS], standalone=True,
                                               settings=settings, stop_flag=stop))
        await asyncio.sleep(1)
        try:
            yield kmock, http, base, kubelet
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(op, 10)
            await handlers.shut_down()  # kopf skips its cleanup when its shutdown is cut short
            kl.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kl
            await kubelet.close()


def live(kmock, plural: str) -> dict[str, dict[str, Any]]:
    return {name: obj.raw for (res, ns, name), obj in list(kmock.objects.items())
            if res.plural == plural and not obj.deleted}


async def eventually(check, timeout: float = 20.0, what: str = ""):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check() if asyncio.iscoroutinefunction(check) else check()
        except (AssertionError, KeyError, StopIteration, IndexError):
            if asyncio.get_running_loop().time() > deadline:
                print(f"timed out waiting for {what}")
                raise
        await asyncio.sleep(0.2)


def state(kmock) -> str:
    """The partitions and pods as `kubectl get` would show them (printed when a wait times out)."""
    lines = []
    for name, p in sorted(live(kmock, "partitions").items()):
        st = p.get("status") or {}
        lines.append(f"{name} {st.get('phase')} repair={st.get('repair')} leader={st.get('leader')} "
                     f"members={[(m['name'], m.get('inGroup')) for m in p['spec']['members']]} "
                     f"progressing={[c for c in st.get('conditions') or [] if c['type'] == 'Progressing']}")
    for name, p in sorted(live(kmock, "pods").items()):
        ready = [c["status"] for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
        lines.append(f"pod {name} partition={p['metadata']['labels'][R.L_PARTITION]} ready={ready}")
    return "\n".join(lines)


def routing(kmock) -> RoutingTable:
    cm = live(kmock, "configmaps")["kynamo-routing-orders"]
    return RoutingTable.from_doc(json.loads(cm["data"]["routing.json"]))


async def admin(http: aiohttp.ClientSession, member: str, path: str) -> dict[str, Any] | None:
    host, port, _ = member.rsplit(":", 2)
    try:
        async with http.get(f"http://{host}:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return await r.json() if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


def item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i:06d}"}, "n": {"N": str(i)}}


class Writer:
    """Puts items until stopped, like a router: members from the routing ConfigMap, re-read on change."""

    def __init__(self, kmock, http: aiohttp.ClientSession, pid: str) -> None:
        self.kmock, self.http, self.pid = kmock, http, pid
        self.acked: dict[str, int] = {}
        self.version = -1
        self.client: GroupClient | None = None
        self.stop = asyncio.Event()

    def refresh(self) -> GroupClient:
        rt = routing(self.kmock)
        if rt.version != self.version or self.client is None:
            p = next(p for p in rt.partitions if p.id == self.pid)
            self.client = GroupClient(self.http, self.pid, list(p.replicas), deadline=5)
            self.version = rt.version
        return self.client

    async def run(self, workers: int = 4) -> None:
        counter = iter(range(10**9))

        async def worker() -> None:
            while not self.stop.is_set():
                i = next(counter)
                doc = item(i)
                while not self.stop.is_set():
                    try:
                        res = await self.refresh().write({"op": "put", "key": {"pk": doc["pk"]}, "item": doc})
                    except StorageError as err:
                        if err.name not in ("OutcomeUnknown", "Unavailable", "NotLeader", "NoSuchPartition"):
                            raise
                        await asyncio.sleep(0.05)
                        continue
                    assert res.get("ok"), res
                    self.acked[doc["pk"]["S"]] = i
                    break
                await asyncio.sleep(0.005)

        await asyncio.gather(*(worker() for _ in range(workers)))


async def form_group(kmock, http, base: str, table: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Apply a one-partition Table; once its group formed: the partition and its pods, one per zone."""
    async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=table) as r:
        assert r.status < 300

    def formed():
        parts = live(kmock, "partitions")
        assert len(parts) == 1 and all((p.get("status") or {}).get("formed") for p in parts.values())
        return next(iter(parts))

    pid = await eventually(formed, 30, "group formed")
    pods = {n: p for n, p in live(kmock, "pods").items() if p["metadata"]["labels"][R.L_PARTITION] == pid}
    assert sorted(p["metadata"]["labels"][R.L_ZONE] for p in pods.values()) == ZONES
    return pid, pods


async def test_table_to_real_group_survives_a_lost_replica(cluster):
    kmock, http, base, kubelet = cluster
    t0 = asyncio.get_running_loop().time()
    pid, pods = await form_group(kmock, http, base, TABLE)
    assert {p["spec"]["nodeName"] for p in pods.values()} == {"node-0", "node-1", "node-2"}
    for p in pods.values():  # what the pod asks of a real kubelet; this one runs it as the test's user
        sc, csc = p["spec"]["securityContext"], p["spec"]["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001 and sc["fsGroup"] == 10001
        assert csc["readOnlyRootFilesystem"] and csc["capabilities"]["drop"] == ["ALL"]

    def routed():
        rt = routing(kmock)
        assert len(rt.partitions) == 1 and rt.partitions[0].id == pid
        assert sorted(rt.partitions[0].replicas) == sorted(kubelet.pod_address(n) for n in pods)
        return rt

    rt = await eventually(routed, 15, "routing with the kubelet's addresses")
    members = list(rt.partitions[0].replicas)

    async def led():
        docs = [await admin(http, m, f"/v1/partitions/{pid}") for m in members]
        assert all(d is not None for d in docs)
        leaders = [m for m, d in zip(members, docs, strict=True) if d["is_leader"]]
        assert len(leaders) == 1
        return leaders[0]

    leader = await eventually(led, 15, "a leader")
    print(f"\nformed with leader {leader} after {asyncio.get_running_loop().time() - t0:.1f}s")

    def counter(c) -> float:
        return c.labels("orders")._value.get()

    added, retired = counter(M.LOG_REPLICAS_ADDED), counter(M.LOG_REPLICAS_RETIRED)
    writer = Writer(kmock, http, pid)
    wtask = asyncio.create_task(writer.run())
    try:
        await eventually(lambda: len(writer.acked) >= 200 or next(iter([])), 20, "first writes")
        victim = next(n for n in pods if kubelet.pod_address(n) != leader)
        async with http.delete(f"{base}/api/v1/namespaces/{NS}/pods/{victim}") as r:
            assert r.status < 300
        lost_at, acked_at_loss = asyncio.get_running_loop().time(), len(writer.acked)
        await eventually(lambda: victim in kubelet.killed or next(iter([])), 5, "victim killed")

        def log_replica_in_routing():
            p = routing(kmock).partitions[0]
            assert p.log_replicas
            return p.log_replicas[0]

        log_member = await eventually(log_replica_in_routing, 15, "a log-replica in the group")
        print(f"log-replica {log_member} in the group {asyncio.get_running_loop().time() - lost_at:.1f}s "
              "after the loss")
        n = len(writer.acked)
        await eventually(lambda: len(writer.acked) >= n + 200 or next(iter([])), 15, "writes continue")
        assert len(writer.acked) > acked_at_loss

        def healed():
            part = live(kmock, "partitions")[pid]
            assert part["status"]["repair"] == "healthy"
            ps = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"][R.L_PARTITION] == pid]
            assert sorted(p["metadata"]["labels"][R.L_ROLE] for p in ps) == ["replica"] * 3
            assert sorted(p["metadata"]["labels"][R.L_ZONE] for p in ps) == ZONES
            p = routing(kmock).partitions[0]
            assert not p.log_replicas and len(p.replicas) == 3
            assert kubelet.pod_address(victim) is None
            return p

        p = await eventually(healed, 45, "a rebuilt replica, the log-replica retired")
        print(f"healed {asyncio.get_running_loop().time() - lost_at:.1f}s after the loss")
        # The retired log-replica's pod is deleted after routing drops it: its process stops soon after.
        await eventually(lambda: len(kubelet.killed) >= 2 or next(iter([])), 15, "log-replica's process stopped")
        assert counter(M.LOG_REPLICAS_ADDED) == added + 1 and counter(M.LOG_REPLICAS_RETIRED) == retired + 1
        n = len(writer.acked)
        await eventually(lambda: len(writer.acked) >= n + 100 or next(iter([])), 15, "writes after healing")
    finally:
        writer.stop.set()
        await asyncio.wait_for(wtask, 30)

    # Every member of the healed group serves; every acknowledged write reads back, consistently.
    for m in p.replicas:
        doc = await admin(http, m, f"/v1/partitions/{pid}")
        assert doc is not None, m
    client = GroupClient(http, pid, list(p.replicas), deadline=10)
    missing: list[str] = []

    async def check(keys: list[str]) -> None:
        for k in keys:
            got = await client.get({"pk": {"S": k}}, consistent=True)
            if got is None or got["n"]["N"] != str(writer.acked[k]):
                missing.append(k)

    keys = list(writer.acked)
    await asyncio.gather(*(check(keys[i::16]) for i in range(16)))
    assert not missing, f"{len(missing)} of {len(keys)} acknowledged writes lost, e.g. {missing[:5]}"
    print(f"{len(keys)} acknowledged writes read back; total {asyncio.get_running_loop().time() - t0:.1f}s")


# ------------------------------------------------------------ the story: router, loss, split


class BotoLoad:
    """`tests/boto_load.py` in a process of its own: boto3 puts through the router, every ack recorded."""

    def __init__(self, router: KubeRouter, out: Path, workers: int = 4) -> None:
        self.router, self.out, self.workers = router, out, workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-P", str(Path(__file__).with_name("boto_load.py")),
                                      self.router.endpoint, "orders", str(self.out), str(self.workers)])

    def _lines(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return [ln.split(" ", 2) for ln in text[: text.rfind("\n") + 1].splitlines()]

    @property
    def acked(self) -> dict[str, int]:
        return {ln[1]: int(ln[2]) for ln in self._lines() if ln[0] == "ack"}

    @property
    def failures(self) -> list[str]:
        return [" ".join(ln[1:]) for ln in self._lines() if ln[0] == "fail"]

    def join(self) -> None:
        stop_process(self.proc, 40)


async def grows(load: BotoLoad, by: int, timeout: float, what: str) -> None:
    n = len(load.acked)
    await eventually(lambda: len(load.acked) >= n + by or next(iter([])), timeout, what)


def verify_through_router(router: KubeRouter, acked: dict[str, int]) -> tuple[list[str], int]:
    """Every acknowledged write through boto3: GetItem with ConsistentRead, then one full Scan."""
    keys = list(acked)
    missing: list[str] = []

    def check(part: list[str]) -> None:
        ddb = router.client()
        for k in part:
            got = ddb.get_item(TableName="orders", Key={"pk": {"S": k}}, ConsistentRead=True).get("Item")
            if got is None or got["n"]["N"] != str(acked[k]):
                missing.append(k)

    threads = [threading.Thread(target=check, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scanned: dict[str, str] = {}
    ddb = router.client()
    for page in ddb.get_paginator("scan").paginate(TableName="orders", ConsistentRead=True):
        for it in page["Items"]:
            scanned[it["pk"]["S"]] = it["n"]["N"]
    missing += [k for k in keys if scanned.get(k) != str(acked[k])]
    return missing, len(scanned)


async def test_router_serves_through_loss_repair_and_split(cluster, tmp_path, monkeypatch):
    """Table -> three zones -> routing -> a router serves boto3 writes -> a replica pod deleted -> a
    log-replica within seconds, writes go on -> rebuilt, log-replica retired -> sustained load splits the
    partition, both halves serve through the router -> every acknowledged write reads back."""
    kmock, http, base, _ = cluster
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # One partition (under 1,000 WCU and 3,000 RCU), with room for the test's load without throttling.
    table = {**TABLE, "spec": {**TABLE["spec"], "provisionedThroughput": {"readCapacityUnits": 1500,
                                                                          "writeCapacityUnits": 500}}}
    pid, pods = await form_group(kmock, http, base, table)
    await eventually(lambda: len(routing(kmock).partitions[0].replicas) == 3 or next(iter([])), 15, "routing")

    router = KubeRouter(tmp_path, NS)
    load = BotoLoad(router, tmp_path / "acks.log")
    try:
        def described():
            assert router.proc.poll() is None, router.log.read_text()[-3000:]
            try:
                desc = router.client().describe_table(TableName="orders")["Table"]
            except (ClientError, BotoCoreError) as e:
                raise AssertionError(str(e)) from e
            assert desc["TableStatus"] == "ACTIVE"

        async def serving():
            await asyncio.to_thread(described)

        await eventually(serving, 30, "the router serving the table")
        load.start()
        await grows(load, 150, 30, "first writes through the router")
        print(f"\nrouter serving {loop.time() - t0:.1f}s after the Table")

        # Lose a follower: a log-replica within seconds, writes go on, then a rebuild and the retirement.
        leader = next((p["status"] or {}).get("leader") for p in live(kmock, "partitions").values())
        victim = next(n for n in pods if R.member_id(n, "orders", NS) != leader)
        async with http.delete(f"{base}/api/v1/namespaces/{NS}/pods/{victim}") as r:
            assert r.status < 300
        lost_at = loop.time()
        await eventually(lambda: routing(kmock).partitions[0].log_replicas[0], 15, "a log-replica in the group")
        print(f"log-replica in the group {loop.time() - lost_at:.1f}s after the loss")
        await grows(load, 150, 20, "writes continue after the loss")

        def healed():
            part = live(kmock, "partitions")[pid]
            assert part["status"]["repair"] == "healthy"
            p = routing(kmock).partitions[0]
            assert not p.log_replicas and len(p.replicas) == 3
            ps = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"][R.L_PARTITION] == pid]
            assert sorted(p["metadata"]["labels"][R.L_ROLE] for p in ps) == ["replica"] * 3

        await eventually(healed, 45, "a rebuilt replica, the log-replica retired")
        print(f"healed {loop.time() - lost_at:.1f}s after the loss")
        await grows(load, 100, 20, "writes after healing")

        # Sustained load splits the partition: the operator's own knobs, a short window, a low threshold.
        monkeypatch.setattr(handlers.CONFIG, "split_wcu", 10.0)
        monkeypatch.setattr(handlers.CONFIG, "split_window", 3.0)
        hot_at = loop.time()

        def split():
            parts = live(kmock, "partitions")
            assert parts[pid]["status"]["phase"] == "RETIRED"
            children = [n for n, p in parts.items() if p["spec"].get("parent") == pid]
            assert len(children) == 2
            return children

        children = await eventually(split, 40, "the partition split")
        monkeypatch.setattr(handlers.CONFIG, "split_window", 3600.0)  # one split is the story
        print(f"split {loop.time() - hot_at:.1f}s after the load got hot: {children}")

        def routed_to_children():
            rt = routing(kmock)
            assert sorted(p.id for p in rt.partitions) == sorted(children)
            return rt

        rt = await eventually(routed_to_children, 15, "routing switched to the children")
        acked_at_switch = dict(load.acked)
        await grows(load, 300, 30, "writes through the router after the split")
        schema = rt.key_schema
        after = [k for k in load.acked if k not in acked_at_switch]
        per_child = {p.id: sum(1 for k in after if p.owns(keycodec.position(schema, {"pk": {"S": k}})))
                     for p in rt.partitions}
        assert all(n > 0 for n in per_child.values()), per_child
        print(f"writes after the split per child: {per_child}")

        # Each child moves onto pods of its own, one membership change at a time; the parent's pods go.
        moved_from = loop.time()

        def moved():
            pods_now = live(kmock, "pods").values()
            assert not [p for p in pods_now if p["metadata"]["labels"][R.L_PARTITION] == pid]
            rt = routing(kmock)
            for cid in children:
                own = [p for p in pods_now if p["metadata"]["labels"][R.L_PARTITION] == cid]
                assert sorted(p["metadata"]["labels"][R.L_ZONE] for p in own) == ZONES
                assert all(p["metadata"]["labels"][R.L_ROLE] == "replica" for p in own)
                entry = next(p for p in rt.partitions if p.id == cid)
                assert sorted(entry.replicas) == sorted(R.member_id(p["metadata"]["name"], "orders", NS)
                                                        for p in own)
                part = live(kmock, "partitions")[cid]
                assert part["status"]["inheritedMembers"] == 0
            assert pid not in live(kmock, "poddisruptionbudgets")
            assert all(cid in live(kmock, "poddisruptionbudgets") for cid in children)
            conds = {c["type"]: c for c in live(kmock, "tables")["orders"]["status"]["conditions"]}
            assert conds["Progressing"]["status"] == "False" and conds["Ready"]["status"] == "True", conds

        try:
            await eventually(moved, 180, "children on pods of their own, the parent's pods gone")
        except AssertionError:
            print(state(kmock))
            raise
        print(f"children moved onto their own pods {loop.time() - moved_from:.1f}s after the split")
        await grows(load, 200, 20, "writes after the moves")
        reasons = {e.get("reason") for e in live(kmock, "events").values()}
        assert {"SplitPlanned", "Split", "MovingReplica", "ReplicasMoved", "PodsReleased"} <= reasons, reasons
        load.join()
        failures = load.failures
        missing, scanned = await asyncio.to_thread(verify_through_router, router, dict(load.acked))
    finally:
        load.join()
        router.stop()
    # A client may see a retryable 5xx or a throttle in a switch, never that its table is gone or its request bad.
    wrong = [f for f in failures if "ResourceNotFound" in f or "Validation" in f]
    assert not wrong, f"{len(wrong)} writes refused, e.g. {wrong[:2]}"
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged writes lost, e.g. {missing[:5]}"
    assert scanned >= len(load.acked)
    print(f"{len(load.acked)} acknowledged writes read back (GetItem + Scan), {len(failures)} failed attempts "
          f"retried; total {loop.time() - t0:.1f}s")
