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
from kynamo.local_nodes import SPARE_ZONE
from kynamo.routing import Partition, RoutingTable, TableCatalog
from kynamo.storage_client import api_of
from kynamo.tokens import bearer

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


class LocalControlPlane(TableCatalog):
    """Tables, partitions and routing for one machine's storage nodes."""

    def __init__(
        self,
        data_dir: Path,
        zones: list[list[str]],
        *,
        session: aiohttp.ClientSession | None = None,
        region: str = "us-east-1",
        account: str = "000000000000",
        load_interval: float = 10.0,
        split_window: float = 300.0,
        split_wcu: float = 0.0,
        split_rcu: float = 0.0,
        token: str | None = None,
        partition_max: tuple[float, float] = (planner.PARTITION_RCU, planner.PARTITION_WCU),
        burst_seconds: float = 300.0,
        on_demand_floor: tuple[float, float] = (0.0, 0.0),
        on_demand_window: float = 1800.0,
        balance_leaders: bool = True,
    ) -> None:
        self.path = Path(data_dir) / "tables.json"
        self.token = token  # the storage nodes' client token, for a session of our own
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
        # The processes as `kynamo local`'s supervisor sees them (set_nodes): healthy members per
        # zone, spares (log-replicas only), lost members, and every member's zone.
        self.topology: dict[str, list[str]] = {f"zone-{i}": list(z) for i, z in enumerate(zones)}
        self.spares: list[str] = []
        self.lost: set[str] = set()
        self.zone_of: dict[str, str] = {m: f"zone-{i}" for i, z in enumerate(zones) for m in z}
        self.repair_interval = 1.0
        # Splitting on load: read every partition's load each `load_interval` seconds; split one
        # that stays over its share (or over --split-wcu/--split-rcu units/s) for `split_window`.
        self.load_interval = load_interval
        self.split_window = split_window
        self.split_wcu = split_wcu
        self.split_rcu = split_rcu
        self.retire_after = 2.0  # seconds a split parent keeps serving reads to stale routes
        self._readings: dict[str, tuple[float, float, float]] = {}  # pid -> (at, rcu total, wcu total)
        self._samples: dict[str, list[planner.LoadSample]] = {}
        self._splitting: set[str] = set()
        self._wake = asyncio.Event()
        # Admission: partition limits pushed on every load interval (adaptive capacity), and the
        # on-demand peak each table has shown (its split threshold is a share of twice that peak).
        self.partition_max = partition_max
        self.burst_seconds = burst_seconds
        self.on_demand_floor = on_demand_floor
        self.on_demand_window = on_demand_window
        self._rates: dict[str, tuple[float, float]] = {}  # pid -> latest (rcu/s, wcu/s)
        # Leader balance: after each load pass (which reads every partition's leader), hand
        # leaderships from the node leading most to one leading fewest (planner.plan_leader_balance).
        self.balance_leaders = balance_leaders
        self.max_handovers = 4  # per pass: each pauses one group's writes for a moment
        self._leader_seen: dict[str, float] = {}  # pid -> when a load reading last found its leader
        self._peaks: dict[str, tuple[planner.PeakTracker, planner.PeakTracker]] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=bearer(self.token))
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
        self._spawn(self._repair_loop())
        for meta in self.tables.values():  # a split cut short by a stop goes on where it was
            for part in list(meta["partitions"]):
                if part.get("splitting") and meta["status"] in (ACTIVE, UPDATING):
                    self._start_split(meta, part, None)
        if self.load_interval > 0:
            self._spawn(self._load_loop())

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
            led = planner.leader_counts(q for m in self.tables.values() for q in m["partitions"])
            parts = planner.plan_partitions(name, table_id, count, self.zones, leaders=led)
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
        if self.load_interval > 0 and {"rcu", "wcu", "billing_mode"} & set(changes):
            # New throughput applies at once, as in DynamoDB: not at the next load reading.
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._limit_calls(meta))
        return meta

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

    async def _put_replica(self, meta: dict[str, Any], part: dict[str, Any], member: str,
                           attempts: int | None = None) -> None:
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
        while not self._closed and attempts != 0:
            attempts = None if attempts is None else attempts - 1
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

    async def _collect_orphans(self, first_delay: float = 5.0) -> None:
        """Keep deleting replicas no longer wanted: a deleted table's whose node was down, split parents."""
        delay = first_delay
        while self.orphans and not self._closed:
            await asyncio.sleep(delay)
            delay = 5.0
            done = []
            for o in list(self.orphans):
                if time.time() >= float(o.get("after") or 0) and await self._delete_replica(o["member"], o["pid"]):
                    done.append(o)
            async with self._lock:
                self.orphans = [o for o in self.orphans if o not in done]
                self._save()

    # ------------------------------------------------------------ healing (the operator's repair, on processes)
    def set_nodes(self, topology: dict[str, list[str]], spares: list[str], lost: set[str],
                  zone_of: dict[str, str]) -> None:
        """The supervisor's view of the processes: new tables go to healthy ones, lost ones are healed."""
        self.topology = {z: list(ms) for z, ms in topology.items()}
        self.zones = [self.topology[z] for z in sorted(self.topology)]
        self.spares = list(spares)
        self.lost = set(lost)
        self.zone_of = dict(zone_of)
        self._wake.set()

    def _needs_repair(self, part: dict[str, Any]) -> bool:
        if part.get("splitting"):
            return False
        members = part["replicas"] + part["log_replicas"] + [p["member"] for p in part.get("pending") or []]
        return bool(part["log_replicas"] or part.get("pending") or self.lost.intersection(members))

    async def _repair_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.repair_interval)
            self._wake.clear()
            jobs = [(meta, part) for meta in list(self.tables.values()) if meta["status"] in (ACTIVE, UPDATING)
                    for part in meta["partitions"] if self._needs_repair(part)]
            if not jobs:
                continue
            results = await asyncio.gather(*(self._repair_partition(m, p) for m, p in jobs), return_exceptions=True)
            for (_, part), res in zip(jobs, results, strict=True):
                if isinstance(res, Exception):
                    log.warning("repair step failed", extra={"ctx": {"pid": part["id"], "err": repr(res)}})

    def _load_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        zones: dict[str, int] = {}
        nodes: dict[str, int] = {}
        for meta in self.tables.values():
            for part in meta["partitions"]:
                for m in part["replicas"] + part["log_replicas"] + [p["member"] for p in part.get("pending") or []]:
                    nodes[m] = nodes.get(m, 0) + 1
                    z = self.zone_of.get(m, "")
                    zones[z] = zones.get(z, 0) + 1
        return zones, nodes

    async def _repair_partition(self, meta: dict[str, Any], part: dict[str, Any]) -> None:
        """One step of `planner.plan_repair` for a partition that lost a member or is mid-repair."""
        pid = part["id"]
        pending: list[dict[str, str]] = part.setdefault("pending", [])
        live = [m for m in part["replicas"] + part["log_replicas"] + [p["member"] for p in pending]
                if m not in self.lost]
        docs = dict(zip(live, await asyncio.gather(*(self._get_status(m, pid) for m in live)), strict=True))
        leader = next((m for m, d in docs.items() if d and d.get("is_leader") and d.get("serving", True)), None)
        if leader is not None:  # the leader's configuration is the truth about who is in the group
            self._sync_config(meta, part, docs[leader] or {})
            part["leader"] = leader
        roles = {m: planner.REPLICA for m in part["replicas"]}
        roles.update({m: planner.LOG_REPLICA for m in part["log_replicas"]})
        in_group = set(roles)
        for p in pending:
            roles.setdefault(p["member"], p["role"])
        healthy = {m for ms in self.topology.values() for m in ms} | set(self.spares)
        members = []
        for m, role in roles.items():
            doc = docs.get(m)
            if m in self.lost:
                state = planner.LOST
            elif (doc is not None and not doc.get("corrupt")) or (m not in in_group and m in healthy):
                state = planner.READY
            else:
                state = planner.PENDING
            members.append(planner.Member(m, self.zone_of.get(m, "?"), role, state, m in in_group,
                                          None if doc is None else doc.get("applied_index")))
        view = planner.GroupView(pid, tuple(members), commit_index=None if leader is None else
                                 (docs[leader] or {}).get("commit_index"))
        topo = {z: list(ms) for z, ms in self.topology.items()}
        topo[SPARE_ZONE] = list(self.spares)
        zone_load, node_load = self._load_counts()
        actions = planner.plan_repair(view, topo, unavailable={z for z, ms in topo.items() if not ms},
                                      zone_load=zone_load, node_load=node_load, log_only={SPARE_ZONE})
        for act in actions:
            await self._apply_repair(meta, part, act, leader)
        if actions:
            log.info("repair", extra={"ctx": {"pid": pid, "phase": planner.repair_phase(view),
                                              "actions": [type(a).__name__ for a in actions]}})

    def _sync_config(self, meta: dict[str, Any], part: dict[str, Any], doc: dict[str, Any]) -> None:
        full, logs = list(doc.get("replicas") or []), list(doc.get("log_replicas") or [])
        if not full or (sorted(full), sorted(logs)) == (sorted(part["replicas"]), sorted(part["log_replicas"])):
            return
        pending = [p for p in part.get("pending") or [] if p["member"] not in full + logs]
        for m in part["replicas"] + part["log_replicas"]:  # dropped from the group: still to delete
            if m not in full + logs and m not in self.lost and all(p["member"] != m for p in pending):
                pending.append({"member": m, "role": planner.LOG_REPLICA if m in part["log_replicas"]
                                else planner.REPLICA})
        part.update(replicas=full, log_replicas=logs, pending=pending)
        meta["version"] = int(meta.get("version", 1)) + 1
        self._save()

    async def _apply_repair(self, meta: dict[str, Any], part: dict[str, Any], act: planner.Action,
                            leader: str | None) -> None:
        pid, pending = part["id"], part.setdefault("pending", [])
        if isinstance(act, planner.CreateMember):
            if act.slot.node is None or act.slot.node in part["replicas"] + part["log_replicas"] or any(
                    p["member"] == act.slot.node for p in pending):
                return  # never two replicas of one partition in one process
            pending.append({"member": act.slot.node, "role": act.role})
            print(f"kynamo local: {pid}: {act.role} on {act.slot.node} ({act.slot.zone})", flush=True)
        elif isinstance(act, planner.AddToGroup):
            if leader is None:
                return
            full, logs = list(part["replicas"]), list(part["log_replicas"])
            (logs if act.role == planner.LOG_REPLICA else full).append(act.name)
            await self._put_replica(meta, {**part, "replicas": full, "log_replicas": logs, "campaign": None},
                                    act.name, attempts=3)
            if await self._membership(leader, pid, "add", act.name, act.role):
                part.update(replicas=full, log_replicas=logs,
                            pending=[p for p in pending if p["member"] != act.name])
        elif isinstance(act, planner.RemoveFromGroup):
            if leader is None:
                return
            role = planner.LOG_REPLICA if act.name in part["log_replicas"] else planner.REPLICA
            if await self._membership(leader, pid, "remove", act.name, role):
                part["replicas"] = [m for m in part["replicas"] if m != act.name]
                part["log_replicas"] = [m for m in part["log_replicas"] if m != act.name]
                if act.name not in self.lost:
                    pending.append({"member": act.name, "role": role})
        elif isinstance(act, planner.DeleteMember):
            if act.name not in self.lost and not await self._delete_replica(act.name, pid):
                return
            part["pending"] = [p for p in pending if p["member"] != act.name]
        meta["version"] = int(meta.get("version", 1)) + 1
        self._save()

    async def _membership(self, leader: str, pid: str, action: str, member: str, role: str) -> bool:
        assert self._session is not None
        body = {"action": action, "member": member, "role": role}
        try:
            async with self._session.post(self._url(leader, pid) + "/membership", json=body,
                                          timeout=aiohttp.ClientTimeout(total=15)) as resp:
                if resp.status < 300:
                    print(f"kynamo local: {pid}: {action} {role} {member}", flush=True)
                    return True
                ctx = {"pid": pid, "action": action, "member": member, "body": (await resp.text())[:300]}
                log.info("membership change refused", extra={"ctx": ctx})
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("membership change failed", extra={"ctx": {"pid": pid, "err": repr(exc)}})
        return False

    # ------------------------------------------------------------ splitting on load
    async def _load_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.load_interval)
            started = time.monotonic()
            jobs = [(meta, part) for meta in list(self.tables.values()) if meta["status"] in (ACTIVE, UPDATING)
                    for part in meta["partitions"] if not part.get("splitting") and not self._needs_repair(part)]
            results = await asyncio.gather(*(self._check_load(m, p) for m, p in jobs), return_exceptions=True)
            for (_, part), res in zip(jobs, results, strict=True):
                if isinstance(res, Exception):
                    log.warning("load check failed", extra={"ctx": {"pid": part["id"], "err": repr(res)}})
            try:
                await self._push_limits()
            except Exception as exc:  # admission is best effort: a missed push keeps the previous limits
                log.warning("pushing partition limits failed", extra={"ctx": {"err": repr(exc)}})
            if self.balance_leaders:
                try:
                    await self._balance_leaders({part["id"] for _, part in jobs
                                                 if self._leader_seen.get(part["id"], -1.0) >= started})
                except Exception as exc:  # best effort: the next pass tries again
                    log.warning("leader balance failed", extra={"ctx": {"err": repr(exc)}})

    async def _balance_leaders(self, read: set[str]) -> None:
        """Even out leaders over the healthy processes, a few handovers per pass.

        `read`: partitions whose leader this pass's load reading just found (the others are left
        out: mid-split, mid-repair, or leaderless right now).
        """
        nodes = {m for ms in self.topology.values() for m in ms} - self.lost
        parts = {part["id"]: part for meta in self.tables.values() if meta["status"] in (ACTIVE, UPDATING)
                 for part in meta["partitions"] if part["id"] in read and part.get("leader")}
        for _ in range(self.max_handovers):
            groups = [planner.LeaderView(pid, part["leader"], tuple(m for m in part["replicas"] if m in nodes))
                      for pid, part in parts.items()]
            move = planner.plan_leader_balance(groups, nodes)
            if move is None:
                return
            part = parts.pop(move.partition)  # one try per pass for a group, whatever the outcome
            if await self._hand_over(part, move.to):
                part["leader"] = move.to

    async def _hand_over(self, part: dict[str, Any], to: str) -> bool:
        assert self._session is not None
        leader = part["leader"]
        try:
            async with self._session.post(self._url(leader, part["id"]) + "/handover", json={"to": to},
                                          timeout=aiohttp.ClientTimeout(total=10)) as resp:
                doc = await resp.json() if resp.status == 200 else {"error": await resp.text()}
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            doc = {"error": repr(exc)}
        done = bool(doc.get("handed_over"))
        ctx = {"pid": part["id"], "from": leader, "to": to, "done": done}
        if not done:
            ctx["answer"] = str(doc.get("error") or doc)[:300]
        log.info("leader balance: handover", extra={"ctx": ctx})
        if done:
            print(f"kynamo local: {part['id']}: leadership moved {leader} -> {to} (balancing leaders)", flush=True)
        return done

    async def _push_limits(self) -> None:
        """Every partition's limits (`planner.partition_limits`) to each of its full replicas."""
        calls = []
        for meta in list(self.tables.values()):
            if meta["status"] in (ACTIVE, UPDATING):
                calls += self._limit_calls(meta)
        await asyncio.gather(*calls)

    def _limit_calls(self, meta: dict[str, Any]) -> list[Any]:
        """One table's pushes: adaptive limits from the latest rates, to the live members of each partition."""
        parts = meta["partitions"]
        limits = planner.partition_limits(meta["billing_mode"], meta.get("rcu"), meta.get("wcu"), self._rates,
                                          [p["id"] for p in parts], self.partition_max)
        calls = []
        for part in parts:
            if part.get("splitting"):
                continue  # frozen for writes; its children get theirs once routed
            rcu, wcu = limits[part["id"]]
            body = {"rcu": rcu, "wcu": wcu, "burst_seconds": self.burst_seconds}
            calls += [self._put_limits(member, part["id"], body) for member in part["replicas"]
                      if member not in self.lost]
        return calls

    async def _put_limits(self, member: str, pid: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        try:
            async with self._session.put(self._url(member, pid) + "/limits", json=body,
                                         timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status >= 300:
                    log.info("limits refused", extra={"ctx": {"pid": pid, "member": member, "status": resp.status}})
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("limits not pushed", extra={"ctx": {"pid": pid, "member": member, "err": repr(exc)}})

    def _observe_peak(self, meta: dict[str, Any], now: float, units: tuple[float, float]) -> tuple[float, float]:
        """Track an on-demand table's peak from the consumption its partitions report."""
        trackers = self._peaks.get(meta["id"])
        if trackers is None:
            trackers = self._peaks[meta["id"]] = (planner.PeakTracker(self.on_demand_window),
                                                  planner.PeakTracker(self.on_demand_window))
        seen = (trackers[0].observe(now, units[0]), trackers[1].observe(now, units[1]))
        before = tuple(meta.get("peak") or (0.0, 0.0))
        peak = planner.update_peak((float(before[0]), float(before[1])), seen)
        if peak != before:
            meta["peak"] = list(peak)
            self._save()
        return peak

    async def _read_load(self, part: dict[str, Any]) -> dict[str, Any] | None:
        """The leader's load document (it sees every write; followers only replicate)."""
        assert self._session is not None
        for member in part["replicas"]:
            try:
                async with self._session.get(self._url(member, part["id"]) + "/load",
                                             timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    doc = await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                doc = None
            if isinstance(doc, dict) and doc.get("is_leader") and not doc.get("frozen"):
                part["leader"] = member  # fresh for routers' hints, new tables' placement, leader balance
                self._leader_seen[part["id"]] = time.monotonic()
                return doc
        return None

    async def _check_load(self, meta: dict[str, Any], part: dict[str, Any]) -> None:
        pid = part["id"]
        doc = await self._read_load(part)
        if doc is None:
            return
        now = time.monotonic()
        rcu, wcu = float(doc.get("rcu") or 0), float(doc.get("wcu") or 0)
        prev = self._readings.get(pid)
        self._readings[pid] = (now, rcu, wcu)
        samples = self._samples.setdefault(pid, [])
        delta = (0.0, 0.0)
        if prev is not None and now > prev[0] and rcu >= prev[1] and wcu >= prev[2]:  # totals reset on restart
            dt = now - prev[0]
            delta = (rcu - prev[1], wcu - prev[2])
            samples.append(planner.LoadSample(now, delta[0] / dt, delta[1] / dt))
            self._rates[pid] = (delta[0] / dt, delta[1] / dt)
        horizon = now - max(self.split_window, self.load_interval) - 2 * self.load_interval
        self._samples[pid] = samples = [s for s in samples if s.at >= horizon]
        peak = (0.0, 0.0)
        if meta["billing_mode"] == "PAY_PER_REQUEST":
            peak = self._observe_peak(meta, now, delta)
        share_r, share_w = planner.partition_share(meta["billing_mode"], meta.get("rcu"), meta.get("wcu"),
                                                   len(meta["partitions"]), *peak, floor=self.on_demand_floor)
        max_r, max_w = self.partition_max
        share_r, share_w = min(share_r, max_r or share_r), min(share_w, max_w or share_w)
        share_r, share_w = self.split_rcu or share_r, self.split_wcu or share_w
        load = planner.PartitionLoad(
            partition=pid,
            start=bytes.fromhex(part["start"] or ""),
            end=None if part["end"] is None else bytes.fromhex(part["end"]),
            samples=tuple(samples),
            distribution=tuple((bytes.fromhex(k), float(w)) for k, w in doc.get("distribution") or []),
            recent=tuple(bytes.fromhex(k) for k in doc.get("recent") or []),
            size_bytes=int(doc.get("size_bytes") or 0),
            splitting=pid in self._splitting,
        )
        decision = planner.plan_split(load, share_r, share_w, now, window=self.split_window,
                                      max_bytes=planner.PARTITION_BYTES)
        if isinstance(decision, planner.Split):
            self._start_split(meta, part, decision)
        elif decision.reason not in ("not-hot", "already-splitting"):
            log.info("no split", extra={"ctx": {"pid": pid, "reason": decision.reason}})

    def _start_split(self, meta: dict[str, Any], part: dict[str, Any], decision: planner.Split | None) -> None:
        if part["id"] in self._splitting:
            return
        self._splitting.add(part["id"])
        self._spawn(self._split(meta, part, decision))

    async def _split(self, meta: dict[str, Any], part: dict[str, Any], decision: planner.Split | None) -> None:
        """Split through the parent's log, switch routing to the children, then retire the parent.

        The children are seeded on every member from the parent's state at the split entry, and
        the parent answers writes with WrongPartition from that entry on: the router refreshes
        its routes and retries on a child, so no acknowledged write is lost or duplicated.
        """
        pid = part["id"]
        try:
            info = part.get("splitting")
            if info is None:
                assert decision is not None
                async with self._lock:
                    idx = int(meta.get("next_index") or len(meta["partitions"]))
                    meta["next_index"] = idx + 2
                    info = {
                        "at": decision.key.hex(), "reason": decision.reason,
                        "children": [planner.partition_id(meta["name"], meta["id"], idx + i) for i in (0, 1)],
                        "epoch": max(int(p["epoch"]) for p in meta["partitions"]) + 1,
                    }
                    part["splitting"] = info
                    self._save()
            print(f"kynamo local: splitting {pid} at {info['at']} ({info.get('reason')}) into "
                  f"{', '.join(info['children'])}", flush=True)
            body = {"at": info["at"], "children": [{"partition_id": c} for c in info["children"]],
                    "epoch": info["epoch"]}
            while not await self._post_split(part, body):
                if self._closed:
                    return
                await asyncio.sleep(0.2)
            at = info["at"]
            children = [
                {"id": cid, "start": start, "end": end, "epoch": info["epoch"], "replicas": list(part["replicas"]),
                 "log_replicas": [], "leader": None, "campaign": None}
                for cid, start, end in zip(info["children"], (part["start"], at), (at, part["end"]), strict=True)
            ]
            with contextlib.suppress(TimeoutError):  # switch anyway if the children are slow to elect
                leaders = await asyncio.wait_for(asyncio.gather(*(self._await_leader(c) for c in children)), 5.0)
                for c, leader in zip(children, leaders, strict=True):
                    c["leader"] = leader
            async with self._lock:
                parts = meta["partitions"]
                if part in parts:
                    i = parts.index(part)
                    parts[i:i + 1] = children
                    meta["version"] = int(meta.get("version", 1)) + 1
                    self.orphans.extend({"member": m, "pid": pid, "after": time.time() + self.retire_after}
                                        for m in part["replicas"] + part["log_replicas"])
                    self._save()
            print(f"kynamo local: {pid} split; routing version {meta.get('version')} serves "
                  f"{', '.join(info['children'])}", flush=True)
            self._spawn(self._collect_orphans(first_delay=self.retire_after))
        finally:
            self._splitting.discard(pid)
            self._rates.pop(pid, None)
            for child in info["children"] if info else ():
                self._samples.pop(child, None)

    async def _post_split(self, part: dict[str, Any], body: dict[str, Any]) -> bool:
        assert self._session is not None
        for member in part["replicas"]:
            try:
                async with self._session.post(self._url(member, part["id"]) + "/split", json=body,
                                              timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    if resp.status < 300:
                        return True
                    text = await resp.text()
                    if "already split" in text:
                        raise ControlError("InternalServerError", f"{part['id']}: {text[:200]}")
            except (aiohttp.ClientError, TimeoutError, OSError):
                continue
        return False
