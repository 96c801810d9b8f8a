"""Client for the storage nodes' router-facing API: one partition group at a time.

It follows leader hints on `NotLeader`, backs off while a group elects, and
surfaces `StaleEpoch`/`WrongPartition` to the caller (the router refreshes its
routing table on those). The router, the benchmarks and the tests use it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp
import msgpack

from kynamo.node_channel import ChannelRefused, channels_of
from kynamo.tokens import bearer

log = logging.getLogger("kynamo.storage_client")

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
        max_inflight: int = 2,
        max_batch: int = 32,
        token: str | None = None,
        pipeline_below: int = 8,
        channel: bool = True,
    ) -> None:
        self.session = session
        self.auth = bearer(token)  # token: the nodes' client token
        self.headers = {"Content-Type": CONTENT_TYPE, **self.auth}
        self.pid = partition_id
        self.members = [api_of(x) for x in members]
        self.epoch = epoch
        self.deadline = deadline
        self.leader: str | None = None
        self.retries = 0
        self.max_inflight = max_inflight
        self.max_batch = max_batch
        # A second request may leave while one is out only if fewer than this many items are out:
        # small batches mean little load (pipelining cuts latency); big ones mean the processes are
        # busy, and waiting for the round to finish makes the next batch bigger and cheaper per item.
        self.pipeline_below = pipeline_below
        self._queue: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        self._inflight = 0
        self._inflight_items = 0
        self._senders: set[asyncio.Future[None]] = set()
        # Reads waiting to leave as one `mget`, by consistency (strong reads go to the leader).
        self._reads: dict[bool, list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]] = {True: [], False: []}
        self._reads_inflight = {True: 0, False: 0}
        self._reads_items = {True: 0, False: 0}
        self.mget = True  # cleared when a node does not know `mget` (an older version)
        self.channel = channel  # calls go over the node's channel (node_channel.py) where it has one

    async def _post(self, address: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.epoch is not None:
            body = {**body, "epoch": self.epoch}
        chan = channels_of(self.session).get(address, self.auth) if self.channel else None
        if chan is not None and not chan.unsupported:
            try:
                doc = await chan.call(path, self.pid, body)
            except ChannelRefused as err:
                if err.status == 401:
                    _log_refused(address, "channel refused")
                    raise StorageError("Unauthorized", str(err)) from err
                if not chan.unsupported:
                    raise StorageError("Unavailable", str(err)) from err
            else:
                return _checked(doc, address)
        data = msgpack.packb(body, use_bin_type=True)
        async with self.session.post(
            f"http://{address}/v1/p/{self.pid}/{path}", data=data, headers=self.headers
        ) as resp:
            raw = await resp.read()
            if resp.status == 404 and resp.content_type != CONTENT_TYPE:
                raise StorageError("UnknownPath", f"{address} does not serve {path}")
        return _checked(msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else {}, address)

    async def call(self, path: str, body: dict[str, Any], *, leader_only: bool = True) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline
        delay = 0.01
        tried: set[str] = set()  # members that failed this call (any-member calls move on from them)
        while True:
            target = self.leader if leader_only and self.leader else None
            if target is None:
                target = self._least_busy(tried) if not leader_only else random.choice(self.members)
            try:
                doc = await self._post(target, path, body)
                if leader_only:
                    self.leader = target
                return doc
            except StorageError as err:
                if err.name not in RETRYABLE:
                    raise
                if leader_only or target == self.leader:  # a follower's refusal says nothing of the leader
                    hint = err.doc.get("leader_api") if err.name == "NotLeader" else None
                    self.leader = hint if hint else None
                last: Exception = err
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                if leader_only or target == self.leader:
                    self.leader = None
                last = err
            tried.add(target)
            self.retries += 1
            if loop.time() >= deadline:
                if isinstance(last, StorageError):
                    raise last
                raise StorageError("Unavailable", f"partition {self.pid}: no leader answered in time ({last})")
            exhausted = self.leader is None if leader_only else tried >= set(self.members)
            if exhausted:
                tried.clear()  # no leader known, or every member failed once: back off, then try again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _least_busy(self, avoid: set[str]) -> str:
        """The member an eventually consistent read goes to: of those not in `avoid` (they failed
        this call), the one with the fewest calls from this process waiting on its node (any
        partition's); the known leader among equals, else a random one of them.

        Reads then avoid a node busy with other work (a neighbour table's writes, a slow disk)
        while a quiet group's reads stay on one node, where they batch. Members are re-read on
        every call: the router updates them as replicas move.
        """
        members = [m for m in self.members if m not in avoid] or self.members
        if not self.channel or len(members) < 2:
            return random.choice(members)
        chans = channels_of(self.session)
        loads = {address: chans.get(address, self.auth).pending for address in members}
        least = min(loads.values())
        if loads.get(self.leader or "") == least:
            return self.leader  # type: ignore[return-value]
        return random.choice([address for address, load in loads.items() if load == least])

    async def write(self, cmd: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Replicate one command; concurrent writes to this group share requests.

        While requests are outstanding (`max_inflight`, or one carrying `pipeline_below`
        items or more), new writes queue and leave together as one `batch` command: one
        HTTP round, one log entry, one fsync for all of them (each still applied and
        answered on its own). `timeout`: seconds before this caller gets TimeoutError
        (the command may still be sent and applied, as after any timeout).
        """
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((cmd, fut))
        self._pump()
        return await _bounded(fut, timeout)

    def _may_send(self, inflight: int, items: int) -> bool:
        return inflight == 0 or (inflight < self.max_inflight and items < self.pipeline_below)

    def _pump(self) -> None:
        while self._queue and self._may_send(self._inflight, self._inflight_items):
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self._inflight += 1
            self._inflight_items += len(batch)
            task = asyncio.ensure_future(self._send(batch))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]]) -> None:
        try:
            if len(batch) == 1:
                results = [(await self.call("write", {"cmd": batch[0][0]}))["result"]]
            else:
                cmd = {"op": "batch", "ops": [c for c, _ in batch]}
                results = (await self.call("write", {"cmd": cmd}))["result"]
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        except BaseException as exc:
            _fail_all(batch, exc)
        finally:
            self._inflight -= 1
            self._inflight_items -= len(batch)
            self._pump()

    async def get(self, key: dict[str, Any], *, consistent: bool = True) -> dict[str, Any] | None:
        return (await self.read(key, consistent=consistent)).get("item")

    async def read(self, key: dict[str, Any], *, consistent: bool = True,
                   timeout: float | None = None) -> dict[str, Any]:
        """One GetItem as the node's `get` answer (`item`, `rcu`); concurrent reads share requests.

        While reads of the same consistency are outstanding (as for writes: `max_inflight`,
        or one carrying `pipeline_below` keys or more), new ones queue and leave together as
        one `mget`: one HTTP round and, for strong reads, one read barrier on the leader,
        taken after every read in the batch arrived.
        """
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._reads[consistent].append((key, fut))
        self._pump_reads(consistent)
        return await _bounded(fut, timeout)

    def _pump_reads(self, consistent: bool) -> None:
        queue = self._reads[consistent]
        while queue and self._may_send(self._reads_inflight[consistent], self._reads_items[consistent]):
            batch = queue[: self.max_batch]
            del queue[: self.max_batch]
            self._reads_inflight[consistent] += 1
            self._reads_items[consistent] += len(batch)
            task = asyncio.ensure_future(self._send_reads(batch, consistent))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send_reads(
        self, batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]], consistent: bool
    ) -> None:
        try:
            if len(batch) == 1 or not self.mget:
                docs = [await self.call("get", {"key": k, "consistent": consistent}, leader_only=consistent)
                        for k, _ in batch] if len(batch) == 1 else await asyncio.gather(
                    *(self.call("get", {"key": k, "consistent": consistent}, leader_only=consistent)
                      for k, _ in batch), return_exceptions=True)
            else:
                try:
                    doc = await self.call("mget", {"keys": [k for k, _ in batch], "consistent": consistent},
                                          leader_only=consistent)
                except StorageError as err:
                    if err.name != "UnknownPath":
                        raise
                    self.mget = False
                    docs = await asyncio.gather(
                        *(self.call("get", {"key": k, "consistent": consistent}, leader_only=consistent)
                          for k, _ in batch), return_exceptions=True)
                else:
                    errors = doc.get("errors") or {}
                    docs = []
                    for i, (item, rcu) in enumerate(zip(doc["items"], doc["rcu"], strict=True)):
                        bad = errors.get(i)
                        docs.append(StorageError(bad["error"], str(bad.get("message", "")), bad) if bad
                                    else {"item": item, "rcu": rcu})
            for (_, fut), result in zip(batch, docs, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        except BaseException as exc:
            _fail_all(batch, exc)
        finally:
            self._reads_inflight[consistent] -= 1
            self._reads_items[consistent] -= len(batch)
            self._pump_reads(consistent)

    async def query(self, pk: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        consistent = bool(kwargs.get("consistent", True))
        return await self.call("query", {"pk": pk, **kwargs}, leader_only=consistent)

    async def scan(self, **kwargs: Any) -> dict[str, Any]:
        consistent = bool(kwargs.get("consistent", False))
        return await self.call("scan", kwargs, leader_only=consistent)


def _checked(doc: Any, address: str) -> dict[str, Any]:
    """A node's answer, or the StorageError it names."""
    if not isinstance(doc, dict):
        raise StorageError("BadResponse", f"unexpected body from {address}")
    if "error" in doc:
        if doc["error"] == "Unauthorized":
            _log_refused(address, str(doc.get("message", "")))
        raise StorageError(doc["error"], str(doc.get("message", "")), doc)
    return doc


_REFUSED_LOGGED: dict[str, float] = {}


def _log_refused(address: str, message: str) -> None:
    """A node refused our client token: a misconfiguration worth an error line, once a minute per node."""
    now = time.monotonic()
    if now - _REFUSED_LOGGED.get(address, -120.0) >= 60.0:
        _REFUSED_LOGGED[address] = now
        log.error("storage node refused this process's client token (KYNAMO_CLIENT_TOKEN differs from the nodes')",
                  extra={"ctx": {"node": address, "reason": message}})


async def _bounded(fut: asyncio.Future[Any], timeout: float | None) -> Any:
    """Await fut, failing it with TimeoutError after `timeout` seconds.

    A timer on the future itself: far cheaper per call than asyncio.timeout's task cancellation.
    """
    if timeout is None:
        return await fut
    timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        timer.cancel()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _fail_all(batch: list[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    """A batch request failed as a whole: every caller in it gets the error (cancellation still propagates)."""
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
    if not isinstance(exc, Exception):
        raise exc
