"""Planner decisions -> API calls: Kubernetes objects and the storage nodes' admin API.

Every call here is safe to repeat: creates tolerate "already exists", deletes "already gone",
and membership changes are recorded in the Partition only after the leader accepted them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kynamo.operator import kube as K
from kynamo.operator import metrics as M
from kynamo.operator import resources as R
from kynamo.operator import snapshot

from kynamo import planner
from kynamo.tokens import CLIENT_TOKEN_ENV, bearer

log = logging.getLogger("kynamo.operator")


@dataclass
class OperatorConfig:
    image: str = R.DEFAULT_IMAGE
    storage_port: int = R.API_PORT  # the storage nodes' admin API, reached at the pod's IP
    storage_host: str | None = None  # reach every node at this host instead (tests, port-forwards)
    interval: float = 10.0  # seconds between periodic reconciles (load, repair, routing)
    storage_timeout: float = 3.0
    split_window: float = 300.0  # seconds over its share before a partition splits
    split_wcu: float = 0.0  # write units/s that count as hot (0: the partition's share of the table)
    split_rcu: float = 0.0
    leader_balance: bool = True  # hand leaderships from the node leading most groups to one leading fewest
    # Pod annotation holding the member's "host:port:peer_port" (test kubelets); unset: DNS names.
    member_address_annotation: str | None = None
    # The storage nodes' client token, presented on every admin call (from the operator's own env).
    client_token: str | None = field(default_factory=lambda: os.environ.get(CLIENT_TOKEN_ENV) or None)
    # Secret (in each table's namespace) whose client-token/peer-token keys replica pods get as env.
    auth_secret: str | None = field(default_factory=lambda: os.environ.get("KYNAMO_STORAGE_AUTH_SECRET") or None)
    # More `kynamo storage-node` settings (KYNAMO_* env) for every replica pod (--storage-node-env).
    storage_env: dict[str, str] = field(default_factory=dict)


class Actuator:
    def __init__(self, kube: K.Kube, cfg: OperatorConfig) -> None:
        self.kube = kube
        self.cfg = cfg
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    def http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the actuator is closed")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.storage_timeout),
                                               headers=bearer(self.cfg.client_token))
        return self._http

    async def close(self) -> None:
        self._closed = True
        if self._http is not None:
            await self._http.close()
        await self.kube.close()

    # ------------------------------------------------------------ storage nodes

    def learn(self, pods: Iterable[dict[str, Any]]) -> None:
        R.learn_addresses(pods, self.cfg.member_address_annotation)

    def _base(self, pod: dict[str, Any]) -> str | None:
        if self.cfg.member_address_annotation:
            addr = (pod["metadata"].get("annotations") or {}).get(self.cfg.member_address_annotation)
            if addr:
                return "http://" + addr.rsplit(":", 1)[0]
        host = self.cfg.storage_host or (pod.get("status") or {}).get("podIP")
        return f"http://{host}:{self.cfg.storage_port}" if host else None

    async def _storage(self, method: str, pod: dict[str, Any], path: str, body: Any = None) -> dict[str, Any] | None:
        base = self._base(pod)
        if base is None:
            return None
        try:
            async with self.http().request(method, base + path, json=body) as r:
                if r.status >= 400:
                    log.info("storage %s %s: %s", method, path, r.status)
                    return None
                return await r.json(content_type=None) or {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.debug("storage %s %s unreachable: %s", method, path, e)
            return None

    async def member_stats(self, pid: str, pods: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each ready member's status document, asked of all at once (one slow node costs one timeout)."""
        ready = [(name, pod) for name, pod in pods.items() if snapshot.pod_state(pod, None) == planner.READY]
        docs = await asyncio.gather(*(self._storage("GET", pod, f"/v1/partitions/{pid}") for _, pod in ready))
        return {name: doc for (name, _), doc in zip(ready, docs, strict=True) if doc is not None}

    async def bootstrap(self, part: dict[str, Any], table: dict[str, Any], pods: dict[str, dict[str, Any]]) -> bool:
        """Create the replica on every member's node; True once all accepted (PUT is idempotent)."""
        pid = part["metadata"]["name"]
        ok = True
        for m in part["spec"]["members"]:
            pod = pods.get(m["name"])
            if pod is None or await self._storage("PUT", pod, f"/v1/partitions/{pid}",
                                                  snapshot.storage_spec(part, table, m)) is None:
                ok = False
        return ok

    # ------------------------------------------------------------ decisions

    async def apply(self, action: planner.Action | planner.TransferLeader | planner.ReleaseMember,
                    part: dict[str, Any], table: dict[str, Any],
                    pods: dict[str, dict[str, Any]], leader: str | None) -> dict[str, Any]:
        """Carry out one decision; returns the Partition as it now is."""
        ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
        members = [dict(m) for m in part["spec"]["members"]]
        if isinstance(action, planner.TransferLeader):
            await self.transfer_leader(pid, pods, leader, action.to)
        elif isinstance(action, planner.ReleaseMember):
            # The pod belongs to another partition (a split parent's): drop only this partition's replica.
            pod = pods.get(action.name)
            if pod is not None and snapshot.pod_state(pod, None) != planner.LOST:
                if await self._storage("DELETE", pod, f"/v1/partitions/{pid}") is None:
                    return part
            part = await self._members(part, [x for x in members if x["name"] != action.name])
        elif isinstance(action, planner.DeleteMember) and not planner.owns_member(pid, action.name):
            part = await self._members(part, [x for x in members if x["name"] != action.name])  # not our pod
        elif isinstance(action, planner.CreateMember):
            m = {"name": action.name, "zone": action.slot.zone, "role": action.role, "inGroup": False}
            if action.slot.node:
                m["node"] = action.slot.node
            if all(x["name"] != action.name for x in members):
                members.append(m)
                part = await self._members(part, members)
            await self.ensure_member(part, table, m)
        elif isinstance(action, planner.DeleteMember):
            await self.kube.delete(K.PODS, ns, action.name)
            await self.kube.delete(K.PVCS, ns, f"data-{action.name}")
            part = await self._members(part, [x for x in members if x["name"] != action.name])
        elif isinstance(action, planner.AddToGroup | planner.RemoveFromGroup):
            add = isinstance(action, planner.AddToGroup)
            target = next((x for x in members if x["name"] == action.name), None)
            lpod = pods.get(leader or "")
            if target is None or lpod is None:
                return part
            if add:  # the new member must know its group before the leader starts sending to it
                spec = snapshot.storage_spec(part, table, target)
                spec["replicas" if target["role"] == planner.REPLICA else "log_replicas"].append(
                    R.member_id(target["name"], part["spec"]["table"], ns))
                if action.name in pods and await self._storage("PUT", pods[action.name],
                                                               f"/v1/partitions/{pid}", spec) is None:
                    return part
            body = {"action": "add" if add else "remove", "role": target["role"],
                    "member": R.member_id(action.name, part["spec"]["table"], ns)}
            if await self._storage("POST", lpod, f"/v1/partitions/{pid}/membership", body) is None:
                return part
            target["inGroup"] = add
            if target["role"] == planner.LOG_REPLICA:
                (M.LOG_REPLICAS_ADDED if add else M.LOG_REPLICAS_RETIRED).labels(part["spec"]["table"]).inc()
            part = await self._members(part, members)
        return part

    async def transfer_leader(self, pid: str, pods: dict[str, dict[str, Any]], leader: str | None, to: str) -> None:
        """Ask `to` to campaign; if the old leader is still leading after a few election timeouts, drop
        this partition's replica from its pod (see `planner.TransferLeader`)."""
        if to not in pods:
            return
        await self._storage("POST", pods[to], f"/v1/partitions/{pid}/campaign", {})
        for _ in range(6):
            await asyncio.sleep(0.25)
            doc = await self._storage("GET", pods[to], f"/v1/partitions/{pid}")
            if doc and doc.get("is_leader"):
                return
        if leader is not None and leader in pods:
            log.info("%s: leader %s kept leading; dropping its replica so %s's group elects another",
                     pid, leader, to, extra={"ctx": {"partition": pid, "leader": leader, "to": to}})
            await self._storage("DELETE", pods[leader], f"/v1/partitions/{pid}")

    async def hand_over(self, pid: str, leader_pod: dict[str, Any], to: str) -> bool:
        """Ask the leader to hand `pid`'s leadership to member id `to`; True once `to` leads."""
        doc = await self._storage("POST", leader_pod, f"/v1/partitions/{pid}/handover", {"to": to})
        return bool(doc and doc.get("handed_over"))

    async def _members(self, part: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
        ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
        new = await self.kube.patch(K.PARTITIONS, ns, pid, {"spec": {"members": members}})
        if new is None:
            new = dict(part)
        new.setdefault("spec", {})["members"] = members  # emulators may answer with the old object
        return new

    async def ensure_member(self, part: dict[str, Any], table: dict[str, Any], member: dict[str, Any]) -> None:
        ns = part["metadata"]["namespace"]
        await self.kube.create(K.PVCS, ns, R.pvc(part, member, table["spec"]))
        await self.kube.create(K.PODS, ns, R.pod(part, member, table["spec"],
                                                 image=table["spec"].get("image") or self.cfg.image,
                                                 auth_secret=self.cfg.auth_secret,
                                                 settings=self.cfg.storage_env))

    async def ensure(self, res: K.Resource, obj: dict[str, Any], *, update: bool = False) -> None:
        """Create `obj`; when it exists and `update`, merge-patch it to the wanted content."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        created = await self.kube.create(res, ns, obj)
        if created is None and update:
            await self.kube.patch(res, ns, name, {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})

    # ------------------------------------------------------------ splits

    async def load(self, pid: str, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The leader's load document: consumed-unit totals and the sampled key distribution."""
        return await self._storage("GET", pod, f"/v1/partitions/{pid}/load")

    async def push_limits(self, pid: str, pod: dict[str, Any], body: dict[str, Any]) -> bool:
        """A partition's admission limits (`planner.partition_limits`) to one of its replicas."""
        return await self._storage("PUT", pod, f"/v1/partitions/{pid}/limits", body) is not None

    async def split(self, pid: str, pod: dict[str, Any], info: dict[str, Any]) -> bool:
        """Commit the split through the parent's log (idempotent for the same children)."""
        body = {"at": info["at"], "children": [{"partition_id": c} for c in info["children"]],
                "epoch": info["epoch"]}
        return await self._storage("POST", pod, f"/v1/partitions/{pid}/split", body) is not None

    async def drop_replica(self, pid: str, pod: dict[str, Any]) -> bool:
        return await self._storage("DELETE", pod, f"/v1/partitions/{pid}") is not None
