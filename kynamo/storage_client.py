"""Client for the storage nodes' router-facing API: one partition group at a time.

It follows leader hints on `NotLeader`, backs off while a group elects, and
surfaces `StaleEpoch`/`WrongPartition` to the caller (the router refreshes its
routing table on those). The router, the benchmarks and the tests use it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import msgpack

CONTENT_TYPE = "application/x-msgpack"
# NoSuchPartition: that member may have left the group; another member may know the leader.
RETRYABLE = {"NotLeader", "Unavailable", "NoSuchPartition"}


class StorageError(Exception):
    def __init__(self, name: str, message: str, doc: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.doc = doc or {}


def api_of(member: str) -> str:
    """`host:api:peer` member id -> `host:api`; plain `host:port` passes through."""
    parts = member.rsplit(":", 2)
    return f"{parts[0]}:{parts[1]}" if len(parts) == 3 else member


class GroupClient:
    """Talks to one partition's replicas, remembering which one leads."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        partition_id: str,
        members: list[str],
        *,
        epoch: int | None = None,
        deadline: float = 10.0,
    ) -> None:
        self.session = session
        self.pid = partition_id
        self.members = [api_of(x) for x in members]
        self.epoch = epoch
        self.deadline = deadline
        self.leader: str | None = None
        self.retries = 0

    async def _post(self, address: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.epoch is not None:
            body = {**body, "epoch": self.epoch}
        data = msgpack.packb(body, use_bin_type=True)
        async with self.session.post(
            f"http://{address}/v1/p/{self.pid}/{path}", data=data, headers={"Content-Type": CONTENT_TYPE}
        ) as resp:
            raw = await resp.read()
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else {}
        if not isinstance(doc, dict):
            raise StorageError("BadResponse", f"unexpected body from {address}")
        if "error" in doc:
            raise StorageError(doc["error"], str(doc.get("message", "")), doc)
        return doc

    async def call(self, path: str, body: dict[str, Any], *, leader_only: bool = True) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        delay = 0.01
        candidates = list(self.members)
        while True:
            target = self.leader if leader_only and self.leader else None
            if target is None:
                target = random.choice(candidates)
            try:
                doc = await self._post(target, path, body)
                if leader_only:
                    self.leader = target
                return doc
            except StorageError as err:
                if err.name not in RETRYABLE:
                    raise
                hint = err.doc.get("leader_api") if err.name == "NotLeader" else None
                self.leader = hint if hint else None
                last: Exception = err
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                self.leader = None
                last = err
            self.retries += 1
            if loop.time() >= deadline:
                if isinstance(last, StorageError):
                    raise last
                raise StorageError("Unavailable", f"partition {self.pid}: no leader answered in time ({last})")
            if self.leader is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def write(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return (await self.call("write", {"cmd": cmd}))["result"]

    async def get(self, key: dict[str, Any], *, consistent: bool = True) -> dict[str, Any] | None:
        doc = await self.call("get", {"key": key, "consistent": consistent}, leader_only=consistent)
        return doc.get("item")

    async def query(self, pk: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        consistent = bool(kwargs.get("consistent", True))
        return await self.call("query", {"pk": pk, **kwargs}, leader_only=consistent)

    async def scan(self, **kwargs: Any) -> dict[str, Any]:
        consistent = bool(kwargs.get("consistent", False))
        return await self.call("scan", kwargs, leader_only=consistent)
