"""Routing tables: which partition (and which replica group) owns a key position.

A routing table is versioned; storage nodes reject a request carrying a stale
epoch or a position outside their range, and the router then asks its routing
source for a fresh table and retries. The document form (JSON-safe, hex
boundaries) is what the control plane publishes (a ConfigMap on Kubernetes).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kynamo.keycodec import KeySchema
from kynamo.storage_client import GroupClient, api_of


class TableCatalog:
    """Table metadata as every control-plane source keeps it: `tables` by name, ARNs from region/account."""

    tables: dict[str, dict[str, Any]]
    region: str
    account: str

    def get(self, name: str) -> dict[str, Any] | None:
        return self.tables.get(name)

    def names(self) -> list[str]:
        return sorted(self.tables)

    def arn(self, name: str) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}"


@dataclass(frozen=True, slots=True)
class Partition:
    id: str
    start: bytes
    end: bytes | None
    epoch: int
    replicas: tuple[str, ...]
    log_replicas: tuple[str, ...] = ()
    leader: str | None = None

    def owns(self, position: bytes) -> bool:
        return position >= self.start and (self.end is None or position < self.end)

    def overlaps(self, lo: bytes, hi: bytes | None) -> bool:
        """Does [start, end) intersect [lo, hi)?"""
        return (hi is None or self.start < hi) and (self.end is None or lo < self.end)

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Partition:
        end = d.get("end")
        return cls(
            id=str(d["id"]),
            start=bytes.fromhex(d.get("start") or ""),
            end=None if end is None else bytes.fromhex(end),
            epoch=int(d.get("epoch", 1)),
            replicas=tuple(d.get("replicas") or ()),
            log_replicas=tuple(d.get("log_replicas") or ()),
            leader=d.get("leader"),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": self.start.hex(),
            "end": None if self.end is None else self.end.hex(),
            "epoch": self.epoch,
            "replicas": list(self.replicas),
            "log_replicas": list(self.log_replicas),
            "leader": self.leader,
        }


@dataclass(slots=True)
class RoutingTable:
    table: str
    version: int
    key_schema: KeySchema
    partitions: list[Partition]
    _starts: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.partitions.sort(key=lambda p: p.start)
        self._starts = [p.start for p in self.partitions]

    def lookup(self, position: bytes) -> Partition:
        """The partition owning a position (ranges are contiguous and cover the whole space)."""
        i = bisect.bisect_right(self._starts, position) - 1
        if i < 0 or not self.partitions[i].owns(position):
            raise LookupError(f"no partition of {self.table} owns position {position.hex()}")
        return self.partitions[i]

    def covering(self, lo: bytes, hi: bytes | None) -> list[Partition]:
        """Partitions intersecting [lo, hi), in key order."""
        return [p for p in self.partitions if p.overlaps(lo, hi)]

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> RoutingTable:
        return cls(
            table=str(d["table"]),
            version=int(d.get("version", 1)),
            key_schema=KeySchema.from_dict(d["key_schema"]),
            partitions=[Partition.from_doc(p) for p in d.get("partitions", [])],
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "version": self.version,
            "key_schema": self.key_schema.to_dict(),
            "partitions": [p.to_doc() for p in self.partitions],
        }


RoutingSource = Callable[[str], Awaitable[RoutingTable | None]]


class Routes:
    """The router's view of every table's routing plus one GroupClient per partition.

    GroupClients are kept across refreshes (keyed by partition id and epoch) so the
    leader each one learned survives a refresh of an unrelated partition.
    """

    def __init__(self, session: aiohttp.ClientSession, source: RoutingSource, *, deadline: float = 10.0,
                 max_age: float = 1.0) -> None:
        self.session = session
        self.source = source
        self.deadline = deadline
        self.max_age = max_age  # a table is asked for again this often: members move without a stale epoch
        self.tables: dict[str, RoutingTable] = {}
        self._fetched: dict[str, float] = {}
        self._asking: set[str] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        # (partition, epoch) -> its client and the replica list the client's members were derived from
        self._clients: dict[tuple[str, int], tuple[GroupClient, tuple[str, ...]]] = {}

    async def table(self, name: str, *, refresh: bool = False) -> RoutingTable | None:
        rt = None if refresh else self.tables.get(name)
        if rt is not None:
            if time.monotonic() - self._fetched.get(name, 0.0) > self.max_age and name not in self._asking:
                # Ask again in the background: members may have moved without a stale epoch to say so.
                self._asking.add(name)
                task = asyncio.ensure_future(self._reread(name))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return rt
        rt = await self.source(name)
        if rt is None:
            self.tables.pop(name, None)
            return None
        self._keep(name, rt)
        return rt

    def _keep(self, name: str, rt: RoutingTable) -> None:
        old = self.tables.get(name)
        if old is None or rt.version >= old.version:
            self.tables[name] = rt
        self._fetched[name] = time.monotonic()

    async def _reread(self, name: str) -> None:
        try:
            rt = await self.source(name)
        except Exception:  # the source is away: keep what is known, ask again later
            rt = None
        finally:
            self._asking.discard(name)
        if rt is not None:
            self._keep(name, rt)
        else:
            self._fetched[name] = time.monotonic()

    def forget(self, name: str) -> None:
        rt = self.tables.pop(name, None)
        ids = {p.id for p in rt.partitions} if rt is not None else set()
        for key in [k for k in self._clients if k[0] in ids]:
            self._clients.pop(key, None)

    def client(self, part: Partition) -> GroupClient:
        key = (part.id, part.epoch)
        known = self._clients.get(key)
        if known is None:
            c = GroupClient(self.session, part.id, list(part.replicas), epoch=part.epoch, deadline=self.deadline)
            if part.leader:
                c.leader = api_of(part.leader)
        else:
            c, replicas = known
            if replicas == part.replicas:
                return c
            # A replica moved or was rebuilt: same group, same epoch, new members.
            c.members = [api_of(x) for x in part.replicas]
            if c.leader not in c.members:
                c.leader = None
        self._clients[key] = (c, part.replicas)
        return c
