"""The local control plane: tables as partition groups on the `kynamo local` storage nodes.

It owns table metadata (persisted as JSON under the data dir, so a restart keeps
every table), drives the storage nodes' admin API to create and delete
partition replicas, and serves routing tables to the in-process router. What to
create and where is decided by `kynamo.planner`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from kynamo import planner
from kynamo.keycodec import KeySchema
from kynamo.routing import Partition, RoutingTable
from kynamo.storage_client import api_of

log = logging.getLogger("kynamo.control_local")

CREATING, ACTIVE, DELETING, UPDATING = "CREATING", "ACTIVE", "DELETING", "UPDATING"
STATS_TTL = 2.0


class ControlError(Exception):
    """A control-plane refusal; `kind` is the DynamoDB error type the router reports."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _not_found(name: str) -> str:
    return f"Requested resource not found: Table: {name} not found"


def _in_use(what: str, name: str) -> str:
    return f"Attempt to change a resource which is still in use: Table is being {what}: {name}"


class LocalControlPlane:
    """Tables, partitions and routing for one machine's storage nodes."""

    def __init__(
        self,
        data_dir: Path,
        zones: list[list[str]],
        *,
        session: aiohttp.ClientSession | None = None,
        region: str = "us-east-1",
        account: str = "000000000000",
    ) -> None:
        self.path = Path(data_dir) / "tables.json"
        self.zones = zones
        self.region = region
        self.account = account
        self.tables: dict[str, dict[str, Any]] = {}
        self.orphans: list[dict[str, Any]] = []  # partition replicas still to delete
        self._session = session
        self._own_session = session is None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        self._stats: dict[str, tuple[float, int, int]] = {}
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        if self.path.exists():
            doc = json.loads(self.path.read_text())
            self.tables = {t["name"]: t for t in doc.get("tables", [])}
            self.orphans = list(doc.get("orphans", []))
        for meta in list(self.tables.values()):
            if meta["status"] == CREATING:
                self._spawn(self._provision(meta["name"]))
            elif meta["status"] == DELETING:
                self._spawn(self._teardown(meta["name"]))
            elif meta["status"] == UPDATING:
                meta["status"] = ACTIVE
        if self.orphans:
            self._spawn(self._collect_orphans())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"tables": list(self.tables.values()), "orphans": self.orphans}, indent=1)
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------ control operations
    async def create_table(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Record a table as CREATING and provision its partitions in the background.

        `spec` is already validated: name, key_schema (pk/pk_type/sk/sk_type), key_schema_doc,
        attribute_definitions, billing_mode, rcu, wcu.
        """
        async with self._lock:
            name = spec["name"]
            if name in self.tables:
                raise ControlError("ResourceInUseException", f"Table already exists: {name}")
            table_id = str(uuid.uuid4())
            count = planner.partition_count(spec["billing_mode"], spec.get("rcu"), spec.get("wcu"))
            parts = planner.plan_partitions(name, table_id, count, self.zones)
            meta = {
                **spec,
                "id": table_id,
                "status": CREATING,
                "created": time.time(),
                "version": 1,
                "partitions": parts,
                "last_increase": None,
                "last_decrease": None,
                "decreases_today": 0,
            }
            self.tables[name] = meta
            self._save()
        self._spawn(self._provision(name))
        return meta

    async def delete_table(self, name: str) -> dict[str, Any]:
        async with self._lock:
            meta = self.tables.get(name)
            if meta is None:
                raise ControlError("ResourceNotFoundException", _not_found(name))
            if meta["status"] == CREATING:
                raise ControlError("ResourceInUseException", _in_use("created", name))
            if meta["status"] == DELETING:
                raise ControlError("ResourceInUseException", _in_use("deleted", name))
            meta["status"] = DELETING
            self._save()
        self._spawn(self._teardown(name))
        return meta

    async def update_table(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply metadata changes (billing mode, throughput) that need no data movement."""
        async with self._lock:
            meta = self.tables.get(name)
            if meta is None or meta["status"] == DELETING:
                raise ControlError("ResourceNotFoundException", _not_found(name))
            if meta["status"] != ACTIVE:
                raise ControlError("ResourceInUseException", _in_use("created", name))
            now = time.time()
            if "rcu" in changes or "wcu" in changes:
                old = (meta.get("rcu") or 0, meta.get("wcu") or 0)
                new = (changes.get("rcu", old[0]), changes.get("wcu", old[1]))
                if new[0] > old[0] or new[1] > old[1]:
                    changes["last_increase"] = now
                if new[0] < old[0] or new[1] < old[1]:
                    changes["last_decrease"] = now
                    changes["decreases_today"] = int(meta.get("decreases_today") or 0) + 1
            meta.update(changes)
            self._save()
            return meta

    def get(self, name: str) -> dict[str, Any] | None:
        return self.tables.get(name)

    def names(self) -> list[str]:
        return sorted(self.tables)

    def arn(self, name: str) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}"

    async def routing(self, name: str) -> RoutingTable | None:
        """The routing table of an ACTIVE table (None for a missing or not yet usable table)."""
        meta = self.tables.get(name)
        if meta is None or meta["status"] not in (ACTIVE, UPDATING):
            return None
        return RoutingTable(
            table=name,
            version=int(meta.get("version", 1)),
            key_schema=KeySchema.from_dict(meta["key_schema"]),
            partitions=[Partition.from_doc(p) for p in meta["partitions"]],
        )

    async def stats(self, name: str) -> tuple[int, int]:
        """(ItemCount, TableSizeBytes) summed over partitions; cached briefly, best effort."""
        cached = self._stats.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < STATS_TTL:
            return cached[1], cached[2]
        meta = self.tables.get(name)
        if meta is None or meta["status"] != ACTIVE:
            return 0, 0
        docs = await asyncio.gather(*(self._partition_status(p) for p in meta["partitions"]))
        count = sum(int(d.get("item_count") or 0) for d in docs if d)
        size = sum(int(d.get("size_bytes") or 0) for d in docs if d)
        self._stats[name] = (now, count, size)
        return count, size

    # ------------------------------------------------------------ storage-node admin calls
    def _url(self, member: str, pid: str) -> str:
        return f"http://{api_of(member)}/v1/partitions/{pid}"

    async def _partition_status(self, part: dict[str, Any]) -> dict[str, Any] | None:
        members = ([part["leader"]] if part.get("leader") else []) + list(part["replicas"])
        for member in members:
            doc = await self._get_status(member, part["id"])
            if doc is not None and "item_count" in doc:
                return doc
        return None

    async def _get_status(self, member: str, pid: str) -> dict[str, Any] | None:
        assert self._session is not None
        try:
            async with self._session.get(self._url(member, pid), timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return None
                doc = await resp.json()
                return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    async def _put_replica(self, meta: dict[str, Any], part: dict[str, Any], member: str) -> None:
        assert self._session is not None
        body = {
            "table": meta["name"],
            "key_schema": meta["key_schema"],
            "start": part["start"],
            "end": part["end"],
            "epoch": part["epoch"],
            "replicas": part["replicas"],
            "log_replicas": part["log_replicas"],
            "campaign": member == part.get("campaign"),
        }
        delay = 0.05
        while not self._closed:
            try:
                async with self._session.put(self._url(member, part["id"]), json=body) as resp:
                    if resp.status < 300:
                        return
                    text = await resp.text()
                    ctx = {"pid": part["id"], "member": member, "status": resp.status, "body": text[:300]}
                    log.warning("create replica refused", extra={"ctx": ctx})
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("create replica retry", extra={"ctx": {"pid": part["id"], "member": member, "err": repr(exc)}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _await_leader(self, part: dict[str, Any]) -> str:
        delay = 0.02
        while not self._closed:
            for member in part["replicas"]:
                doc = await self._get_status(member, part["id"])
                if doc and doc.get("leader") and doc.get("serving", True):
                    return str(doc["leader"])
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise asyncio.CancelledError

    async def _provision_partition(self, meta: dict[str, Any], part: dict[str, Any]) -> None:
        first = part.get("campaign")
        others = [m for m in part["replicas"] + part["log_replicas"] if m != first]
        await asyncio.gather(*(self._put_replica(meta, part, m) for m in others))
        if first:
            await self._put_replica(meta, part, first)
        part["leader"] = await self._await_leader(part)

    async def _provision(self, name: str) -> None:
        meta = self.tables.get(name)
        if meta is None:
            return
        await asyncio.gather(*(self._provision_partition(meta, p) for p in meta["partitions"]))
        async with self._lock:
            if self.tables.get(name) is meta and meta["status"] == CREATING:
                meta["status"] = ACTIVE
                self._save()

    async def _delete_replica(self, member: str, pid: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.delete(self._url(member, pid)) as resp:
                return resp.status < 300 or resp.status == 404
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _teardown(self, name: str) -> None:
        meta = self.tables.get(name)
        if meta is None:
            return
        jobs = [(m, p["id"]) for p in meta["partitions"] for m in p["replicas"] + p["log_replicas"]]
        results = await asyncio.gather(*(self._delete_replica(m, pid) for m, pid in jobs))
        async with self._lock:
            failed = [{"member": m, "pid": pid} for (m, pid), ok in zip(jobs, results, strict=True) if not ok]
            self.orphans.extend(failed)
            if self.tables.get(name) is meta:
                del self.tables[name]
            self._stats.pop(name, None)
            self._save()
        if failed:
            self._spawn(self._collect_orphans())

    async def _collect_orphans(self) -> None:
        """Keep deleting replicas whose node was down when their table was deleted."""
        while self.orphans and not self._closed:
            await asyncio.sleep(5.0)
            done = []
            for o in list(self.orphans):
                if await self._delete_replica(o["member"], o["pid"]):
                    done.append(o)
            async with self._lock:
                self.orphans = [o for o in self.orphans if o not in done]
                self._save()
