"""What every operation shares: table lookup, routed storage calls with retry, capacity.

A storage call is retried after refreshing the routing table when the node
says the route is stale (`StaleEpoch`, `WrongPartition`, `NoSuchPartition`);
leader changes are already followed inside GroupClient.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
from kynamo.router import metrics
from kynamo.router.admission import Admission
from kynamo.router.protocol import (
    ConditionalCheckFailedException,
    InternalServerError,
    ResourceNotFoundException,
    ServiceUnavailable,
    ValidationException,
)

from kynamo import keycodec
from kynamo.keycodec import KeySchema
from kynamo.routing import Partition, Routes, RoutingTable
from kynamo.storage_client import GroupClient, StorageError

T = TypeVar("T")
STALE = {"StaleEpoch", "WrongPartition", "NoSuchPartition"}
ROUTE_RETRIES = 5


class ControlPlane(Protocol):
    """What the router needs from a control plane (local today, Kubernetes later)."""

    def get(self, name: str) -> dict[str, Any] | None: ...
    def names(self) -> list[str]: ...
    def arn(self, name: str) -> str: ...
    async def routing(self, name: str) -> RoutingTable | None: ...
    async def stats(self, name: str) -> tuple[int, int]: ...
    async def create_table(self, spec: dict[str, Any]) -> dict[str, Any]: ...
    async def delete_table(self, name: str) -> dict[str, Any]: ...
    async def update_table(self, name: str, changes: dict[str, Any]) -> dict[str, Any]: ...


# Units reserved by admission for the request being served: settled by consume(), refunded by release().
_RESERVED: contextvars.ContextVar[dict[tuple[str, str], float] | None] = contextvars.ContextVar(
    "kynamo_reserved", default=None)


class Router:
    def __init__(self, control: ControlPlane, session: aiohttp.ClientSession, *, deadline: float = 10.0,
                 admission: Admission | None = None) -> None:
        self.control = control
        self.session = session
        self.deadline = deadline + 1.0  # GroupClient's own retry deadline, plus one last attempt
        self.routes = Routes(session, control.routing, deadline=deadline)
        self.admission = admission or Admission()

    def begin(self) -> None:
        """Start a request's reservation ledger (called by the app for each API request)."""
        _RESERVED.set({})

    async def admit(self, table: str, kind: str) -> None:
        """Admission control before a request touches storage ("read" or "write")."""
        meta = self.active_table(table)
        reserved = await self.admission.admit(meta, kind)
        ledger = _RESERVED.get()
        if reserved and ledger is not None:
            ledger[(table, kind)] = ledger.get((table, kind), 0.0) + reserved

    def consume(self, table: str, kind: str, units: float) -> None:
        """Record what a request consumed: metrics and the table's token bucket."""
        metrics.child(metrics.CONSUMED_RCU if kind == "read" else metrics.CONSUMED_WCU, table).inc(units)
        metrics.child(metrics.CONSUMED, table, kind).inc(units)
        meta = self.control.get(table)
        ledger = _RESERVED.get()
        reserved = ledger.pop((table, kind), 0.0) if ledger is not None else 0.0
        if meta is not None:
            self.admission.charge(meta, kind, units, reserved)

    def release(self) -> None:
        """Give back what a failed request reserved but never consumed."""
        ledger = _RESERVED.get()
        if not ledger:
            return
        for (table, kind), reserved in ledger.items():
            meta = self.control.get(table)
            if meta is not None:
                self.admission.refund(meta, kind, reserved)
        ledger.clear()

    def active_table(self, name: str) -> dict[str, Any]:
        meta = self.control.get(name)
        if meta is None or meta["status"] not in ("ACTIVE", "UPDATING"):
            raise ResourceNotFoundException()
        return meta

    async def routing(self, name: str, *, refresh: bool = False) -> RoutingTable:
        self.active_table(name)
        rt = await self.routes.table(name, refresh=refresh)
        if rt is None:
            raise ResourceNotFoundException()
        return rt

    async def schema(self, name: str) -> KeySchema:
        return (await self.routing(name)).key_schema

    async def routed(
        self,
        table: str,
        position: bytes,
        fn: Callable[[GroupClient, Partition], Awaitable[T]],
        *,
        bounded: bool = False,
    ) -> T:
        """Run fn against the partition owning position, refreshing the route when it is stale.

        `bounded`: fn enforces `self.deadline` itself (raising TimeoutError), as GroupClient's
        write/read do with `timeout=`; otherwise it runs under asyncio.timeout.
        """
        refresh = False
        for attempt in range(ROUTE_RETRIES):
            rt = await self.routing(table, refresh=refresh)
            try:
                part = rt.lookup(position)
            except LookupError:
                refresh = True
                continue
            try:
                if bounded:
                    return await fn(self.routes.client(part), part)
                async with asyncio.timeout(self.deadline):
                    return await fn(self.routes.client(part), part)
            except TimeoutError:
                raise ServiceUnavailable(f"partition {part.id} did not answer in time") from None
            except StorageError as err:
                if err.name in STALE and attempt + 1 < ROUTE_RETRIES:
                    metrics.RETRIES.labels(table, err.name).inc()
                    refresh = True
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                raise storage_error(err) from None
        raise ServiceUnavailable("The routing table could not be refreshed")

    async def on_partition(
        self, table: str, part: Partition, fn: Callable[[GroupClient], Awaitable[T]]
    ) -> T:
        """Run fn against one given partition (scans walk partitions in order)."""
        try:
            async with asyncio.timeout(self.deadline):
                return await fn(self.routes.client(part))
        except TimeoutError:
            raise ServiceUnavailable(f"partition {part.id} did not answer in time") from None
        except StorageError as err:
            if err.name in STALE:
                self.routes.forget(table)
                raise ServiceUnavailable("The table's partitions changed during the request; retry") from None
            raise storage_error(err) from None


def storage_error(err: StorageError) -> Exception:
    """A storage node's refusal as the DynamoDB error the client should see."""
    if err.name == "Throttled":  # the partition's own bucket (second line after the table's): no retry here
        from kynamo.router.protocol import ProvisionedThroughputExceededException

        kind = "write" if err.doc.get("kind") == "write" else "read"
        metrics.child(metrics.THROTTLED, str(err.doc.get("table") or "-"), "partition_" + kind).inc()
        return ProvisionedThroughputExceededException()
    if err.name == "BadRequest":
        msg = err.doc.get("message") or str(err)
        if msg.startswith("bad key"):
            return ValidationException("The provided key element does not match the schema")
        return ValidationException(msg)
    if err.name in ("Unavailable", "OutcomeUnknown", "NotLeader", *STALE):
        return ServiceUnavailable()
    return InternalServerError(f"storage error {err.name}")


def check_result(result: Any, ccf_to_wire: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
    """A write command's result: the returned attributes, or the error it carries."""
    if not isinstance(result, dict):
        raise InternalServerError("malformed storage result")
    err = result.get("err")
    if err is None:
        return result.get("attrs")
    if err == "ConditionalCheckFailedException":
        item = result.get("item")
        if item:
            raise ConditionalCheckFailedException(Item=ccf_to_wire(item))
        raise ConditionalCheckFailedException()
    if err == "ValidationException":
        raise ValidationException(str(result.get("msg") or "Validation failed"))
    raise InternalServerError(str(result.get("msg") or err))


def write_units(size: int) -> float:
    return float(max(1, math.ceil(size / 1024)))


def read_units(size: int, consistent: bool, *, transactional: bool = False) -> float:
    """4 KB units, at least one; an eventually consistent read is half, a transactional one twice."""
    units = max(1, math.ceil(size / 4096))
    if transactional:
        return float(2 * units)
    return float(units) if consistent else units / 2


def page_units(nbytes: int, consistent: bool) -> float:
    """A Query or Scan: every byte it read, over all partitions, rounded up to 4 KB once. Nothing
    read costs nothing (DynamoDB Local and dynalite agree), unlike a GetItem of a missing item."""
    units = math.ceil(nbytes / 4096)
    return float(units) if consistent else units / 2


def write_units_tx(size: int) -> float:
    """A transactional write costs two 1 KB units per KB."""
    return 2 * write_units(size)


def consumed(
    mode: str, table: str, units: float, *, read: float | None = None, write: float | None = None
) -> dict[str, Any]:
    """The ConsumedCapacity member for ReturnConsumedCapacity TOTAL / INDEXES."""
    if mode == "NONE":
        return {}
    doc: dict[str, Any] = {"TableName": table, "CapacityUnits": units}
    if read is not None:
        doc["ReadCapacityUnits"] = read
    if write is not None:
        doc["WriteCapacityUnits"] = write
    if mode == "INDEXES":
        doc["Table"] = {"CapacityUnits": units}
    return {"ConsumedCapacity": doc}


def position(schema: KeySchema, key: dict[str, Any]) -> bytes:
    return keycodec.position(schema, key)
