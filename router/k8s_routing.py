"""The Kubernetes routing source: the operator's ConfigMaps and `Table` resources, for `kynamo router`.

Routing comes from the ConfigMaps labelled `kynamo.io/table` (key `routing.json`, a
`RoutingTable.to_doc()`); table metadata (key schema, billing, throughput, status)
from the `Table` custom resources, so DescribeTable/ListTables answer from what the
operator reconciles. CreateTable/DeleteTable/UpdateTable only create, delete or patch
`Table` resources: the operator does the rest. ConfigMap changes arrive by watch;
both lists are also read every `POLL` seconds (a resync that cannot miss an event,
and what keeps Table status current) and at once when a storage node says a route
is stale. A table's routing never moves back to an older version, so a lagging
list or a replayed watch event cannot undo a split.

The official `kubernetes` client is synchronous, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from kynamo.control_local import ControlError
from kynamo.keycodec import KeySchema
from kynamo.routing import RoutingTable, TableCatalog
from kynamo.storage_client import api_of

log = logging.getLogger("kynamo.router.k8s")

GROUP, VERSION, PLURAL = "kynamo.io", "v1alpha1", "tables"
L_TABLE = "kynamo.io/table"
A_PROTECTION = "kynamo.io/deletion-protection"  # the CRD has no field for it
POLL = 2.0  # the resync of Tables and ConfigMaps; ConfigMap changes arrive by watch
WATCH_SECONDS = 60
STATS_TTL = 5.0
REQUEST_TIMEOUT = 10.0
T = TypeVar("T")


def load_api_client() -> k8s_client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=cfg)
    return k8s_client.ApiClient(cfg)


def resource_name(table: str) -> str:
    """A DNS-1123 name for a DynamoDB table name (which allows capitals, `_` and `.`)."""
    if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", table):
        return table
    slug = re.sub(r"[^a-z0-9-]+", "-", table.lower()).strip("-")[:30].strip("-")
    return f"{slug or 't'}-{hashlib.sha1(table.encode()).hexdigest()[:8]}"


def _epoch(ts: str | None) -> float:
    if not ts:
        return time.time()
    try:
        return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def meta_of(obj: dict[str, Any], has_routing: bool) -> dict[str, Any]:
    """A `Table` resource as the router's table metadata (the dict `kynamo.control_local` keeps)."""
    spec, status, md = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    types = {a["attributeName"]: a["attributeType"] for a in spec.get("attributeDefinitions") or []}
    keys = spec.get("keySchema") or []
    pk = keys[0]["attributeName"]
    sk = keys[1]["attributeName"] if len(keys) > 1 else None
    throughput = spec.get("provisionedThroughput") or {}
    peak = status.get("peak") or {}
    phase = status.get("phase") or ("ACTIVE" if has_routing else "CREATING")
    if md.get("deletionTimestamp"):
        phase = "DELETING"
    return {
        "name": spec.get("tableName") or md["name"],
        "resource": md["name"],
        "id": status.get("tableId") or md.get("uid") or md["name"],
        "status": phase,
        "created": _epoch(md.get("creationTimestamp")),
        "version": int(status.get("routingVersion") or 0),
        "key_schema": {"pk": pk, "pk_type": types.get(pk, "S"), "sk": sk, "sk_type": types.get(sk) if sk else None},
        "key_schema_doc": [{"AttributeName": k["attributeName"], "KeyType": k["keyType"]} for k in keys],
        "attribute_definitions": [{"AttributeName": n, "AttributeType": t} for n, t in types.items()],
        "billing_mode": spec.get("billingMode", "PAY_PER_REQUEST"),
        "rcu": int(throughput.get("readCapacityUnits") or 0),
        "wcu": int(throughput.get("writeCapacityUnits") or 0),
        # An on-demand table's previous peak as the operator recorded it: the GAC starts from it.
        "peak": [float(peak.get("rcu") or 0.0), float(peak.get("wcu") or 0.0)],
        "deletion_protection": (md.get("annotations") or {}).get(A_PROTECTION) == "true",
    }


def table_resource(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """CreateTable's validated spec as a `Table` resource."""
    body: dict[str, Any] = {
        "tableName": spec["name"],
        "attributeDefinitions": [{"attributeName": a["AttributeName"], "attributeType": a["AttributeType"]}
                                 for a in spec["attribute_definitions"]],
        "keySchema": [{"attributeName": k["AttributeName"], "keyType": k["KeyType"]} for k in spec["key_schema_doc"]],
        "billingMode": spec["billing_mode"],
    }
    if spec["billing_mode"] == "PROVISIONED":
        body["provisionedThroughput"] = {"readCapacityUnits": int(spec["rcu"]), "writeCapacityUnits": int(spec["wcu"])}
    md: dict[str, Any] = {"name": resource_name(spec["name"]), "namespace": namespace}
    if spec.get("deletion_protection"):
        md["annotations"] = {A_PROTECTION: "true"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Table", "metadata": md, "spec": body}


class KubernetesControlPlane(TableCatalog):
    """The router's ControlPlane (see `kynamo.router.core.ControlPlane`) on Kubernetes."""

    def __init__(self, namespace: str, session: aiohttp.ClientSession, *, region: str = "us-east-1",
                 account: str = "000000000000", poll: float = POLL, watch: bool = True,
                 api: k8s_client.ApiClient | None = None) -> None:
        self.namespace = namespace
        self.session = session
        self.region = region
        self.account = account
        self.poll = poll
        self.watch = watch
        self.api = api or load_api_client()
        self.core = k8s_client.CoreV1Api(self.api)
        self.custom = k8s_client.CustomObjectsApi(self.api)
        self.tables: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, RoutingTable] = {}
        self._stats: dict[str, tuple[float, int, int]] = {}
        self._last = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopped = threading.Event()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)  # the client's default is to wait forever
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def start(self) -> None:
        """First listing; an API server not answering yet is retried by the loop, not fatal."""
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("kubernetes API unreachable at start", extra={"ctx": {"err": repr(exc)}})
        self._task = asyncio.create_task(self._loop())
        if self.watch:
            threading.Thread(target=self._watch, args=(asyncio.get_running_loop(),), daemon=True,
                             name="kynamo-routing-watch").start()

    async def close(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.refresh()
            except Exception as exc:  # the API server away: keep serving what we know
                log.warning("kubernetes API unreachable", extra={"ctx": {"err": repr(exc)}})

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """A thread: stream ConfigMap changes into the event loop (the poll stays as a resync)."""
        while not self._stopped.is_set():
            try:
                w = k8s_watch.Watch()
                for ev in w.stream(self.core.list_namespaced_config_map, self.namespace, label_selector=L_TABLE,
                                   timeout_seconds=WATCH_SECONDS, _request_timeout=WATCH_SECONDS + 10):
                    if self._stopped.is_set():
                        w.stop()
                        break
                    if ev.get("type") in ("ADDED", "MODIFIED") and isinstance(ev.get("raw_object"), dict):
                        loop.call_soon_threadsafe(self._apply_cm, ev["raw_object"])
            except Exception as exc:
                log.debug("ConfigMap watch ended", extra={"ctx": {"err": repr(exc)}})
                self._stopped.wait(1.0)

    def _apply_cm(self, cm: dict[str, Any]) -> str | None:
        """Take a routing ConfigMap's table if it is newer than the one held; its table name."""
        md = cm.get("metadata") or {}
        raw = (cm.get("data") or {}).get("routing.json")
        if L_TABLE not in (md.get("labels") or {}) or not raw or md.get("deletionTimestamp"):
            return None  # kmock ignores label selectors
        try:
            rt = RoutingTable.from_doc(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("bad routing ConfigMap", extra={"ctx": {"name": md.get("name"), "err": repr(exc)}})
            return None
        old = self.routes.get(rt.table)
        if old is None or rt.version > old.version:
            self.routes[rt.table] = rt
            log.info("routing of %s: version %d", rt.table, rt.version,
                     extra={"ctx": {"table": rt.table, "version": rt.version}})
        return rt.table

    async def refresh(self) -> None:
        """List the routing ConfigMaps and the Tables; keep each table's newest routing version."""
        async with self._lock:
            resp = await self._call(self.core.list_namespaced_config_map, self.namespace,
                                    label_selector=L_TABLE, _preload_content=False)
            cms = json.loads(resp.data).get("items") or []
            tables = await self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                      self.namespace, PLURAL)
            self._last = time.monotonic()
        seen = {name for name in map(self._apply_cm, cms) if name}
        metas: dict[str, dict[str, Any]] = {}
        for obj in tables.get("items") or []:
            try:
                name = (obj.get("spec") or {}).get("tableName") or obj["metadata"]["name"]
                metas[name] = meta_of(obj, name in self.routes)
            except (KeyError, IndexError, TypeError) as exc:
                log.warning("bad Table resource", extra={"ctx": {"err": repr(exc)}})
        self.tables = metas
        for name in set(self.routes) - seen - set(metas):  # gone with its Table (a watch may be ahead of a list)
            del self.routes[name]

    async def routing(self, name: str) -> RoutingTable | None:
        """The newest routing of a usable table; a stale route asks the API server again (at most every 0.2 s)."""
        if time.monotonic() - self._last > 0.2:
            with contextlib.suppress(Exception):
                await self.refresh()
        meta = self.tables.get(name)
        if meta is None or meta["status"] not in ("ACTIVE", "UPDATING"):
            return None
        rt = self.routes.get(name)
        if rt is None:
            return None
        if rt.key_schema != KeySchema.from_dict(meta["key_schema"]):
            log.warning("routing key schema differs from the Table's", extra={"ctx": {"table": name}})
        return rt

    async def stats(self, name: str) -> tuple[int, int]:
        """(ItemCount, TableSizeBytes) from the partitions' status; cached briefly, best effort."""
        cached = self._stats.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < STATS_TTL:
            return cached[1], cached[2]
        rt = self.routes.get(name)
        if rt is None:
            return 0, 0
        count = size = 0
        for p in rt.partitions:
            for member in ([p.leader] if p.leader else []) + list(p.replicas):
                try:
                    async with self.session.get(f"http://{api_of(member)}/v1/partitions/{p.id}",
                                                timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        doc = await resp.json() if resp.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                    continue
                if "item_count" in doc:
                    count += int(doc.get("item_count") or 0)
                    size += int(doc.get("size_bytes") or 0)
                    break
        self._stats[name] = (now, count, size)
        return count, size

    # ------------------------------------------------------------ control operations: Table resources
    async def create_table(self, spec: dict[str, Any]) -> dict[str, Any]:
        if spec["name"] in self.tables:
            raise ControlError("ResourceInUseException", f"Table already exists: {spec['name']}")
        body = table_resource(spec, self.namespace)
        try:
            obj = await self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION,
                                   self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                raise ControlError("ResourceInUseException", f"Table already exists: {spec['name']}") from None
            raise ControlError("ValidationException", f"the Table resource was refused: {exc.reason}") from None
        meta = meta_of(obj or body, False)
        meta["status"] = "CREATING"
        self.tables[meta["name"]] = meta
        return meta

    def _existing(self, name: str) -> dict[str, Any]:
        meta = self.tables.get(name)
        if meta is None or meta["status"] == "DELETING":
            raise ControlError("ResourceNotFoundException",
                               f"Requested resource not found: Table: {name} not found")
        return meta

    async def delete_table(self, name: str) -> dict[str, Any]:
        meta = self._existing(name)
        if meta["status"] == "CREATING":
            raise ControlError("ResourceInUseException",
                               f"Attempt to change a resource which is still in use: Table is being created: {name}")
        try:
            await self._call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                             PLURAL, meta["resource"])
        except ApiException as exc:
            if exc.status != 404:
                raise
        meta = {**meta, "status": "DELETING"}
        self.tables[name] = meta
        self.routes.pop(name, None)
        return meta

    async def update_table(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        meta = self._existing(name)
        if meta["status"] != "ACTIVE":
            raise ControlError("ResourceInUseException",
                               f"Attempt to change a resource which is still in use: Table is being updated: {name}")
        spec: dict[str, Any] = {}
        patch: dict[str, Any] = {"spec": spec}
        if "billing_mode" in changes:
            spec["billingMode"] = changes["billing_mode"]
            if changes["billing_mode"] == "PAY_PER_REQUEST":
                spec["provisionedThroughput"] = None
        provisioned = changes.get("billing_mode", meta["billing_mode"]) == "PROVISIONED"
        if provisioned and ("rcu" in changes or "wcu" in changes):
            spec["provisionedThroughput"] = {"readCapacityUnits": int(changes.get("rcu", meta["rcu"])),
                                             "writeCapacityUnits": int(changes.get("wcu", meta["wcu"]))}
        if "deletion_protection" in changes:
            flag = "true" if changes["deletion_protection"] else None
            patch["metadata"] = {"annotations": {A_PROTECTION: flag}}
        await self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                         meta["resource"], patch, _content_type="application/merge-patch+json")
        meta = {**meta, **changes}
        self.tables[name] = meta
        return meta
