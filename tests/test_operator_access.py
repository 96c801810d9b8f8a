"""The operator runs replica pods with tokens from a Secret and presents the client token itself.

The real operator, the Kubernetes API emulator and the test kubelet (which resolves secretKeyRef
from the emulator's Secrets, as a kubelet does): with --storage-auth-secret the replica pods get
KYNAMO_CLIENT_TOKEN and KYNAMO_PEER_TOKEN by secretKeyRef (the values never appear in the pod
spec, and the operator never reads the Secret), the operator forms the group through the admin
API with its own KYNAMO_CLIENT_TOKEN, and the nodes refuse callers without it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

os.environ.setdefault("KYNAMO_INTERVAL", "0.5")  # before the handlers import: their timers take it then

import pytest
from kynamo.operator import handlers
from kynamo.operator import resources as R

from kynamo.routing import RoutingTable
from kynamo.storage_client import GroupClient, StorageError
from tests.kube_emulator import Emulator
from tests.test_operator_e2e import NS, TABLE, cluster, eventually, live  # noqa: F401 - fixture

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator), pytest.mark.slow]
TOKEN = "operator-test-client-token"
PEER = "operator-test-peer-token"
SECRET = "kynamo-storage-auth"
# A table of its own: the operator's per-table locks outlive a test's event loop (kopf handlers module).
GUARDED = {**TABLE, "metadata": {"name": "guarded", "namespace": NS}}


def routing(kmock) -> RoutingTable:  # type: ignore[no-untyped-def]
    cm = live(kmock, "configmaps")[R.routing_name("guarded")]
    return RoutingTable.from_doc(json.loads(cm["data"]["routing.json"]))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_replica_pods_take_tokens_from_the_secret_and_the_operator_presents_it(cluster, monkeypatch):  # noqa: F811
    kmock, http, base, kubelet = cluster
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": SECRET, "namespace": NS},
              "data": {"client-token": b64(TOKEN), "peer-token": b64(PEER)}}
    async with http.post(f"{base}/api/v1/namespaces/{NS}/secrets", json=secret) as r:
        assert r.status < 300, await r.text()
    monkeypatch.setattr(handlers.CONFIG, "auth_secret", SECRET)
    monkeypatch.setattr(handlers.CONFIG, "client_token", TOKEN)
    # storageNode.* Helm values, as the operator gets them (--storage-node-env), reach every replica pod.
    monkeypatch.setattr(handlers.CONFIG, "storage_env", R.storage_env('{"KYNAMO_MAX_READ_LAG": 4321}'))
    async with http.post(f"{base}/apis/kynamo.io/v1alpha1/namespaces/{NS}/tables", json=GUARDED) as r:
        assert r.status < 300

    def formed() -> str:
        parts = live(kmock, "partitions")
        assert len(parts) == 1 and all((p.get("status") or {}).get("formed") for p in parts.values())
        return next(iter(parts))

    pid = await eventually(formed, 40, "group formed through the token-guarded admin API")
    pods = [p for p in live(kmock, "pods").values() if p["metadata"]["labels"][R.L_PARTITION] == pid]
    assert len(pods) == 3
    for p in pods:
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        for name, key in (("KYNAMO_CLIENT_TOKEN", "client-token"), ("KYNAMO_PEER_TOKEN", "peer-token")):
            assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}
        assert TOKEN not in json.dumps(p) and PEER not in json.dumps(p)
        assert env["KYNAMO_MAX_READ_LAG"] == {"name": "KYNAMO_MAX_READ_LAG", "value": "4321"}
    # The processes got the values (through their environment, as a kubelet passes them).
    for c in kubelet.containers.values():
        assert c.proc is not None
        environ = Path(f"/proc/{c.proc.pid}/environ").read_bytes().split(b"\0")
        assert f"KYNAMO_CLIENT_TOKEN={TOKEN}".encode() in environ
        assert f"KYNAMO_PEER_TOKEN={PEER}".encode() in environ
        assert b"KYNAMO_MAX_READ_LAG=4321" in environ

    def routed() -> list[str]:
        rt = routing(kmock)
        assert len(rt.partitions) == 1 and len(rt.partitions[0].replicas) == 3
        return list(rt.partitions[0].replicas)

    members = await eventually(routed, 15, "routing")
    client = GroupClient(http, pid, members, deadline=15, token=TOKEN)
    await client.write({"op": "put", "key": {"pk": {"S": "a"}}, "item": {"pk": {"S": "a"}, "n": {"N": "1"}}})
    assert (await client.get({"pk": {"S": "a"}}))["n"] == {"N": "1"}
    for member in members:
        host, port, _ = member.rsplit(":", 2)
        async with http.get(f"http://{host}:{port}/v1/partitions/{pid}") as r:
            assert r.status == 401 and (await r.json())["error"] == "Unauthorized"
    with pytest.raises(StorageError) as info:
        await GroupClient(http, pid, members, deadline=15).get({"pk": {"S": "a"}})
    assert info.value.name == "Unauthorized"
