"""A storage-node process: hosts many partition replicas behind one HTTP API.

The process owns what replicas share: the peer transport (one connection per
peer process multiplexing every group), the thread pool for disk work, and the
HTTP server with the router-facing client API and the admin API the control
plane drives. Each replica lives in `<data-dir>/partitions/<id>/` with its spec
in `spec.json`, so a restarted process reopens exactly what it hosted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kynamo.storage_node import access
from kynamo.storage_node import metrics as m
from kynamo.storage_node import wireapi as w
from kynamo.storage_node.aio_sync import AioSync
from kynamo.storage_node.channel import ClientOp, NowOp, serve_channel
from kynamo.storage_node.members import api_address, peer_address
from kynamo.storage_node.paxos import Options
from kynamo.storage_node.paxos_types import (
    Config,
    ConfigChangeError,
    Message,
    NotLeaderError,
    SnapshotMeta,
)
from kynamo.storage_node.replica import (
    OutcomeUnknown,
    PartitionFrozen,
    PartitionSpec,
    Replica,
    ReplicaEnv,
    ReplicaUnavailable,
    read_units,
    write_units,
)
from kynamo.storage_node.state import QueryPage, RangeReader
from kynamo.storage_node.throttle import READ, WRITE, Limits, PartitionThrottle
from kynamo.storage_node.transport import PeerTransport
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kynamo import keycodec
from kynamo.channel_frames import CHANNEL_PATH
from kynamo.promcache import child

log = logging.getLogger("kynamo.storage_node.node")

SNAPSHOT_META_HEADER = "X-Kynamo-Snapshot-Meta"
LOG_ONLY_HEADER = "X-Kynamo-Log-Only"
MAX_MGET_KEYS = 1000  # reads run inline on the event loop: bound one request's work
# A Query/Scan page reads this much on the event loop before the rest moves to a thread: most
# pages are small, and a thread hop costs more CPU than reading them (about 25 us per query).
INLINE_READ_BYTES = 64 << 10


def _meta_to_json(meta: SnapshotMeta) -> str:
    return json.dumps(
        {
            "index": meta.index,
            "ballot": list(meta.ballot),
            "replicas": list(meta.config.replicas),
            "log_replicas": list(meta.config.log_replicas),
        }
    )


def _meta_from_json(text: str) -> SnapshotMeta:
    doc = json.loads(text)
    return SnapshotMeta(
        int(doc["index"]),
        (int(doc["ballot"][0]), str(doc["ballot"][1])),
        Config(tuple(doc["replicas"]), tuple(doc["log_replicas"])),
    )


class StorageNode:
    def __init__(
        self,
        data_dir: Path,
        member_id: str,
        *,
        options: Options | None = None,
        peer_token: str | None = None,
        client_token: str | None = None,
        scrub_interval: float = 60.0,
        threads: int = 4,
        partition_max_rcu: float = 3000.0,
        partition_max_wcu: float = 1000.0,
        aio_fsync: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.member_id = member_id
        self.options = options or Options()
        self.peer_token = peer_token
        self.client_token = client_token  # required of every /v1/ caller; presented to peers
        self.scrub_interval = scrub_interval
        self.replicas: dict[str, Replica] = {}
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kynamo-io")
        self.aio_fsync = aio_fsync  # WAL syncs through Linux AIO where the kernel has it (aio_sync.py)
        self.aio: AioSync | None = None
        self._frames_exported: dict[str, int] = {}
        self.transport = PeerTransport(
            peer_address(member_id), self._on_messages, auth_token=peer_token, on_counter=self._on_transport_counter
        )
        self._runner: web.AppRunner | None = None
        self._channels: set[web.WebSocketResponse] = set()  # routers' open channels (channel.py)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._creating: dict[str, asyncio.Lock] = {}
        self.started_at = time.time()
        # Partition-level admission (second line after the routers' table buckets), by partition id.
        self.partition_max = (partition_max_rcu, partition_max_wcu)
        self.throttles: dict[str, PartitionThrottle] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str, api_port: int, peer_port: int) -> None:
        (self.data_dir / "partitions").mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                              headers=access.bearer(self.client_token))
        if self.aio_fsync and self.aio is None:
            self.aio = AioSync.open(self.data_dir / "partitions")
        await self.transport.start(host, peer_port)
        for spec_file in sorted((self.data_dir / "partitions").glob("*/spec.json")):
            spec = PartitionSpec.from_doc(json.loads(spec_file.read_text()))
            await self._open_replica(spec)
        for replica in list(self.replicas.values()):
            if replica.frozen is not None:  # a crash may have cut child seeding short
                await self._seed_children(replica, replica.frozen)
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, api_port, backlog=1024).start()
        self._tasks.append(asyncio.create_task(self._scrub_loop()))
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        log.info("storage node started", extra={"ctx": {"member": self.member_id, "replicas": len(self.replicas),
                                                          "wal_sync": "aio" if self.aio is not None else "thread"}})

    async def _tick_loop(self) -> None:
        """One timer for every hosted replica: a hundred groups cost one wake-up, not a hundred."""
        interval = max(0.005, self.options.heartbeat_interval / 2)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for replica in list(self.replicas.values()):
                replica.tick(now)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for replica in list(self.replicas.values()):
            await replica.stop()
        for ws in list(self._channels):
            await ws.close(code=1001, message=b"storage node stopping")
        if self._runner is not None:
            await self._runner.cleanup()
        await self.transport.close()
        if self._session is not None:
            await self._session.close()
        if self.aio is not None:
            self.aio.close()
            self.aio = None
        self.executor.shutdown(wait=True)

    def _on_messages(self, batch: list[tuple[str, Message]]) -> None:
        for group, msg in batch:
            replica = self.replicas.get(group)
            if replica is not None:
                replica.step(msg)

    @staticmethod
    def _on_transport_counter(name: str, delta: int) -> None:
        if name == "corrupt_frames":
            m.CORRUPT_FRAMES.inc(delta)
            log.warning("dropped a peer frame with a bad checksum")

    def _export_transport(self) -> None:
        """Peer frame counts into Prometheus, as deltas since the last scrape (the transport
        counts them as plain integers: a callback per frame cost more than the count)."""
        t = self.transport
        for direction, total in (("sent", t.frames_sent), ("received", t.frames_received)):
            delta = total - self._frames_exported.get(direction, 0)
            if delta > 0:
                child(m.PEER_FRAMES, direction).inc(delta)
                self._frames_exported[direction] = total

    def _send(self, member: str, group: str, msg: Message) -> None:
        self.transport.send(peer_address(member), group, msg)

    def _env(self) -> ReplicaEnv:
        return ReplicaEnv(
            member_id=self.member_id,
            executor=self.executor,
            send=self._send,
            options=self.options,
            snapshot_sender=self._send_snapshot,
            corruption_handler=self._repair,
            split_handler=self._seed_children,
            spec_writer=self._write_spec,
            external_ticks=True,
            aio=self.aio,
        )

    async def _open_replica(self, spec: PartitionSpec) -> Replica:
        replica = Replica(spec, self.data_dir / "partitions" / spec.partition_id, self._env())
        self.replicas[spec.partition_id] = replica
        await replica.start()
        return replica

    async def create_replica(self, spec: PartitionSpec, *, campaign: bool = False) -> Replica:
        """Create (or confirm) a replica; idempotent so the control plane may retry."""
        lock = self._creating.setdefault(spec.partition_id, asyncio.Lock())
        async with lock:
            existing = self.replicas.get(spec.partition_id)
            if existing is not None:
                return existing
            self._write_spec(spec)
            replica = await self._open_replica(spec)
        if campaign and replica.core is not None and not replica.is_log_replica:
            replica.core.campaign()
            replica.step_wake()
        return replica

    def _write_spec(self, spec: PartitionSpec) -> None:
        """Atomically (re)write a replica's spec.json: it is what a restart reopens."""
        directory = self.data_dir / "partitions" / spec.partition_id
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "spec.json.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(spec.to_doc()))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / "spec.json")

    async def delete_replica(self, pid: str) -> bool:
        self.throttles.pop(pid, None)
        replica = self.replicas.pop(pid, None)
        if replica is None:
            return False
        await replica.destroy()
        return True

    def replica(self, pid: str) -> Replica:
        replica = self.replicas.get(pid)
        if replica is None:
            raise w.ApiError(w.NO_SUCH_PARTITION, f"partition {pid} is not hosted on {self.member_id}")
        return replica

    # ------------------------------------------------------------ HTTP API
    def build_app(self) -> web.Application:
        mws = [*access.middlewares(self.client_token), self._errors]  # the token check runs first
        app = web.Application(client_max_size=64 << 20, middlewares=mws)
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/readyz", self._readyz)
        r.add_get("/metrics", self._metrics)
        r.add_post("/v1/p/{pid}/write", self._client_route(self.op_write))
        r.add_post("/v1/p/{pid}/get", self._client_route(self.op_get))
        r.add_post("/v1/p/{pid}/mget", self._client_route(self.op_mget))
        r.add_post("/v1/p/{pid}/query", self._client_route(self.op_query))
        r.add_post("/v1/p/{pid}/scan", self._client_route(self.op_scan))
        r.add_get(CHANNEL_PATH, self._channel)
        r.add_get("/v1/partitions", self._list)
        r.add_put("/v1/partitions/{pid}", self._create)
        r.add_get("/v1/partitions/{pid}", self._status)
        r.add_delete("/v1/partitions/{pid}", self._delete)
        r.add_post("/v1/partitions/{pid}/membership", self._membership)
        r.add_post("/v1/partitions/{pid}/campaign", self._campaign)
        r.add_post("/v1/partitions/{pid}/handover", self._handover)
        r.add_post("/v1/partitions/{pid}/snapshot", self._install_snapshot)
        r.add_post("/v1/partitions/{pid}/scrub", self._scrub_now)
        r.add_post("/v1/partitions/{pid}/split", self._split)
        r.add_get("/v1/partitions/{pid}/load", self._load)
        r.add_put("/v1/partitions/{pid}/limits", self._put_limits)
        r.add_get("/v1/partitions/{pid}/limits", self._get_limits)
        r.add_get("/v1/partitions/{pid}/scrub/{index}", self._scrub_result)
        return app

    def client_ops(self) -> dict[str, ClientOp]:
        """The router-facing operations, by name: served over HTTP and over the channel."""
        return {"write": self.op_write, "get": self.op_get, "mget": self.op_mget, "query": self.op_query,
                "scan": self.op_scan}

    def _client_route(self, op: ClientOp) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return w.respond(await op(request.match_info["pid"], await w.read_body(request)))

        return handle

    def now_ops(self) -> dict[str, NowOp]:
        """Operations that can often answer without waiting: the channel tries these first (see channel.py)."""
        return {"get": self.get_now, "mget": self.mget_now}

    async def _channel(self, request: web.Request) -> web.StreamResponse:
        return await serve_channel(
            request, self.client_ops(), lambda exc: _as_api_error(exc, CHANNEL_PATH), self._channels,
            now_ops=self.now_ops(),
        )

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every failure becomes a named error: msgpack on the client API, JSON on the admin API."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # never let a request take the process down
            err = _as_api_error(exc, request.path)
        if request.path.startswith("/v1/p/"):
            return w.error_response(err)
        return web.json_response(err.body(), status=w.STATUS.get(err.name, 400), dumps=_json_dumps)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "member": self.member_id})

    async def _readyz(self, request: web.Request) -> web.Response:
        bad = [pid for pid, r in self.replicas.items() if r.corrupt]
        return web.json_response({"ready": not bad, "corrupt": bad}, status=200 if not bad else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._export_transport()
        for replica in self.replicas.values():
            replica.export_metrics()
        now = time.monotonic()
        for pid in self.replicas:
            throttle = self._throttle(pid)
            for kind in (READ, WRITE):
                limit, tokens = throttle.limit(kind), throttle.tokens(kind, now)
                m.PARTITION_LIMIT.labels(pid, kind).set(-1 if limit is None else limit)
                m.PARTITION_BALANCE.labels(pid, kind).set(0 if tokens is None else tokens)
        return web.Response(body=generate_latest(m.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _routed(self, pid: str, body: dict[str, Any]) -> Replica:
        replica = self.replica(pid)
        epoch = body.get("epoch")
        if epoch is not None and epoch != replica.spec.epoch:
            raise w.ApiError(
                w.STALE_EPOCH,
                f"routing epoch {epoch} does not match partition epoch {replica.spec.epoch}",
                epoch=replica.spec.epoch,
            )
        return replica

    def _check_range(self, replica: Replica, position: bytes) -> None:
        if not replica.spec.owns(position):
            spec = replica.spec
            raise w.ApiError(
                w.WRONG_PARTITION,
                "key is outside this partition's range",
                start=spec.start,
                end=spec.end,
                epoch=spec.epoch,
            )

    def _position(self, replica: Replica, key: Any) -> bytes:
        if not isinstance(key, dict):
            raise w.ApiError(w.BAD_REQUEST, "key must be a map of key attributes")
        try:
            return keycodec.position(replica.spec.key_schema, key)
        except (KeyError, ValueError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad key: {exc}") from exc

    async def op_write(self, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        replica = self._routed(pid, body)
        cmd = body.get("cmd")
        if not isinstance(cmd, dict) or cmd.get("op") not in {"put", "delete", "update", "batch"}:
            raise w.ApiError(w.BAD_REQUEST, "cmd must be a put/delete/update/batch command")
        subs = cmd["ops"] if cmd["op"] == "batch" else [cmd]
        if not isinstance(subs, list):
            raise w.ApiError(w.BAD_REQUEST, "batch ops must be a list")
        positions = [self._position(replica, sub.get("key") if isinstance(sub, dict) else None) for sub in subs]
        for position in positions:
            self._check_range(replica, position)
        units = _write_units_of(cmd)
        self._admit(replica, WRITE, units)
        try:
            result = await replica.propose(cmd)
        except BaseException:
            self._throttle(pid).charge(WRITE, -units, time.monotonic())  # never written: give it back
            raise
        for position in positions:
            replica.record_load(position, units / len(positions))
        replica.wcu_total += units
        child(m.CONSUMED_WCU, pid).inc(units)
        child(m.REQUESTS, pid, "write", "ok").inc()
        child(m.REQUEST_LATENCY, pid, "write").observe(time.perf_counter() - started)
        return {"result": result, "wcu": units}

    async def _prepare_read(self, pid: str, body: dict[str, Any]) -> tuple[Replica, bool]:
        replica, consistent = self._read_target(pid, body)
        if consistent:
            await replica.read_barrier()
        return self._admit_read(replica), consistent

    def _ready_read(self, pid: str, body: dict[str, Any]) -> tuple[Replica, bool] | None:
        """`_prepare_read` when it needs no wait (an eventual read, or a strong one under a valid
        lease with the state caught up); None otherwise."""
        replica, consistent = self._read_target(pid, body)
        if consistent and not replica.read_ready():
            return None
        return self._admit_read(replica), consistent

    def _read_target(self, pid: str, body: dict[str, Any]) -> tuple[Replica, bool]:
        replica = self._routed(pid, body)
        replica.check_serving()
        if replica.state is None:
            raise w.ApiError(w.UNAVAILABLE, "log-replicas hold no state; read from a full replica")
        consistent = bool(body.get("consistent"))
        if not consistent:
            replica.check_eventual_read()  # a follower that has not caught up answers Unavailable
        return replica, consistent

    def _admit_read(self, replica: Replica) -> Replica:
        self._admit(replica, READ)  # charged where served: the leader, or a follower for eventual reads
        return replica

    async def op_get(self, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        replica, consistent = await self._prepare_read(pid, body)
        return self._get(pid, replica, consistent, body, started)

    def get_now(self, pid: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """`op_get` when it can answer without waiting, else None."""
        started = time.perf_counter()
        ready = self._ready_read(pid, body)
        return None if ready is None else self._get(pid, *ready, body, started)

    def _get(self, pid: str, replica: Replica, consistent: bool, body: dict[str, Any],
             started: float) -> dict[str, Any]:
        position = self._position(replica, body.get("key"))
        self._check_range(replica, position)
        item = replica.state.get(body["key"])
        size = _size_of(item)
        units = read_units(size, consistent)
        replica.record_load(position, units)
        replica.rcu_total += units
        self._throttle(pid).charge(READ, units, time.monotonic())
        child(m.CONSUMED_RCU, pid).inc(units)
        child(m.REQUESTS, pid, "get", "ok").inc()
        child(m.REQUEST_LATENCY, pid, "get").observe(time.perf_counter() - started)
        return {"item": item, "rcu": units}

    async def op_mget(self, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Many GetItems in one request: one read barrier, then each key read and billed on its own.

        A key that fails (bad key, outside the range) gets its own error entry; the others still answer.
        """
        started = time.perf_counter()
        keys = _mget_keys(body)
        replica, consistent = await self._prepare_read(pid, body)
        return self._mget(pid, replica, consistent, keys, started)

    def mget_now(self, pid: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """`op_mget` when it can answer without waiting, else None."""
        started = time.perf_counter()
        keys = _mget_keys(body)
        ready = self._ready_read(pid, body)
        return None if ready is None else self._mget(pid, *ready, keys, started)

    def _mget(self, pid: str, replica: Replica, consistent: bool, keys: list[Any],
              started: float) -> dict[str, Any]:
        state = replica.state
        items: list[Any] = []
        rcus: list[float] = []
        errors: dict[int, dict[str, Any]] = {}
        total = 0.0
        for i, key in enumerate(keys):
            try:
                position = self._position(replica, key)
                self._check_range(replica, position)
            except w.ApiError as err:
                errors[i] = err.body()
                items.append(None)
                rcus.append(0.0)
                continue
            item = state.get(key)
            units = read_units(_size_of(item), consistent)
            replica.record_load(position, units)
            total += units
            items.append(item)
            rcus.append(units)
        replica.rcu_total += total
        self._throttle(pid).charge(READ, total, time.monotonic())
        child(m.CONSUMED_RCU, pid).inc(total)
        child(m.REQUESTS, pid, "mget", "ok").inc()
        child(m.REQUEST_LATENCY, pid, "mget").observe(time.perf_counter() - started)
        doc: dict[str, Any] = {"items": items, "rcu": rcus}
        if errors:
            doc["errors"] = errors
        return doc

    async def op_query(self, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        replica, consistent = await self._prepare_read(pid, body)
        pk = body.get("pk")
        try:
            prefix = keycodec.pk_prefix(pk)
        except (KeyError, ValueError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad partition key: {exc}") from exc
        spec = replica.spec
        end = keycodec.prefix_end(prefix)
        if (spec.end is not None and prefix >= spec.end) or (end is not None and end <= spec.start):
            self._check_range(replica, prefix)  # raises WrongPartition with this partition's range
        sk = body.get("sk")
        flt, proj = _parse_filter_projection(body)
        kwargs = dict(
            forward=bool(body.get("forward", True)),
            limit=body.get("limit"),
            start_position=body.get("start"),
            filter=flt,
            projection=proj,
            max_bytes=int(body.get("max_bytes") or (1 << 20)),
        )
        page = await self._read_page(replica.state.query_reader(pk, tuple(sk) if sk else None, **kwargs))
        units = read_units(page.bytes_read, consistent)
        replica.record_load(prefix, units)
        replica.rcu_total += units
        self._throttle(pid).charge(READ, units, time.monotonic())
        child(m.CONSUMED_RCU, pid).inc(units)
        child(m.REQUESTS, pid, "query", "ok").inc()
        child(m.REQUEST_LATENCY, pid, "query").observe(time.perf_counter() - started)
        return _page_doc(page, units)

    async def op_scan(self, pid: str, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        replica, consistent = await self._prepare_read(pid, body)
        spec = replica.spec
        start = max(spec.start, body.get("range_start") or b"")
        end = spec.end
        if body.get("range_end") is not None:
            end = body["range_end"] if end is None else min(end, body["range_end"])
        flt, proj = _parse_filter_projection(body)
        page = await self._read_page(
            replica.state.scan_reader(
                start,
                end,
                limit=body.get("limit"),
                start_position=body.get("start"),
                filter=flt,
                projection=proj,
                max_bytes=int(body.get("max_bytes") or (1 << 20)),
            )
        )
        units = read_units(page.bytes_read, consistent)
        replica.rcu_total += units
        self._throttle(pid).charge(READ, units, time.monotonic())
        child(m.CONSUMED_RCU, pid).inc(units)
        child(m.REQUESTS, pid, "scan", "ok").inc()
        child(m.REQUEST_LATENCY, pid, "scan").observe(time.perf_counter() - started)
        return _page_doc(page, units)

    async def _read_page(self, reader: RangeReader) -> QueryPage:
        """A page's first INLINE_READ_BYTES on the event loop, the rest (a long page) in the executor."""
        if not reader.step(INLINE_READ_BYTES):
            await asyncio.get_running_loop().run_in_executor(self.executor, reader.step)
        return reader.page

    # ------------------------------------------------------------ partition admission
    def _throttle(self, pid: str) -> PartitionThrottle:
        throttle = self.throttles.get(pid)
        if throttle is None:
            throttle = self.throttles[pid] = PartitionThrottle(*self.partition_max)
        return throttle

    def _admit(self, replica: Replica, kind: str, reserve: float = 0.0) -> None:
        """Refuse a client request when its partition is over its limit (reads: charged after they run)."""
        pid = replica.pid
        if not self._throttle(pid).admit(kind, time.monotonic(), reserve):
            child(m.THROTTLED, pid, kind).inc()
            raise w.ApiError(w.THROTTLED, f"partition {pid} is over its {kind} capacity",
                             table=replica.spec.table, partition=pid, kind=kind)

    def _limits_doc(self, pid: str) -> dict[str, Any]:
        throttle, now = self._throttle(pid), time.monotonic()
        lim = throttle.limits
        return {
            "partition_id": pid,
            "pushed": {"rcu": lim.rcu, "wcu": lim.wcu, "burst_seconds": lim.burst_seconds},
            "limit": {k: throttle.limit(k) for k in (READ, WRITE)},
            "physical": {READ: throttle.max_rcu, WRITE: throttle.max_wcu},
            "balance": {k: throttle.tokens(k, now) for k in (READ, WRITE)},
            "throttled": dict(throttle.throttled),
        }

    async def _put_limits(self, request: web.Request) -> web.Response:
        """The control plane's limits for one partition: `{"rcu", "wcu", "burst_seconds"}` (null: no limit)."""
        pid = request.match_info["pid"]
        self.replica(pid)
        try:
            doc = await request.json()
            if not isinstance(doc, dict):
                raise TypeError("limits must be a JSON object")
            rates = {k: None if doc.get(k) is None else float(doc[k]) for k in ("rcu", "wcu")}
            burst = float(doc.get("burst_seconds", 300.0))
        except (ValueError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad limits: {exc}") from exc
        if any(v is not None and not (v >= 0 and math.isfinite(v)) for v in rates.values()) or not 0 <= burst <= 3600:
            raise w.ApiError(w.BAD_REQUEST, "limits must be non-negative and burst_seconds within [0, 3600]")
        self._throttle(pid).set_limits(Limits(rates["rcu"], rates["wcu"], burst), time.monotonic())
        return web.json_response(self._limits_doc(pid))

    async def _get_limits(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        self.replica(pid)
        return web.json_response(self._limits_doc(pid))

    # ------------------------------------------------------------ admin API (JSON)
    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"member": self.member_id, "partitions": [r.status() for r in self.replicas.values()]})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.replica(request.match_info["pid"]).status())

    async def _create(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        try:
            doc = await request.json()
            doc["partition_id"] = pid
            spec = PartitionSpec.from_doc(doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad partition spec: {exc!r}") from exc
        if self.member_id not in spec.replicas and self.member_id not in spec.log_replicas:
            raise w.ApiError(w.BAD_REQUEST, f"{self.member_id} is not a member of the spec")
        spec.role = "log-replica" if self.member_id in spec.log_replicas else "replica"
        replica = await self.create_replica(spec, campaign=bool(doc.get("campaign")))
        return web.json_response(replica.status(), status=201)

    async def _delete(self, request: web.Request) -> web.Response:
        deleted = await self.delete_replica(request.match_info["pid"])
        return web.json_response({"deleted": deleted})

    async def _campaign(self, request: web.Request) -> web.Response:
        replica = self.replica(request.match_info["pid"])
        core = replica.check_serving()
        core.campaign()
        replica.step_wake()
        return web.json_response({"ok": True})

    async def _handover(self, request: web.Request) -> web.Response:
        """Hand this partition's leadership to another full replica (the leader only; see
        `PaxosCore.hand_over`) and wait, up to twice the election timeout, for the outcome.

        Answers the replica's status with `handed_over`: whether `to` now leads (as far as this
        node has heard). Balancing leaders across nodes is what the control planes use it for.
        """
        replica = self.replica(request.match_info["pid"])
        core = replica.check_serving()
        try:
            to = str((await request.json())["to"])
        except (ValueError, KeyError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad handover request: {exc!r}") from exc
        if to == core.node_id and core.is_leader:
            return web.json_response({**replica.status(), "handed_over": True})
        try:
            core.hand_over(to)
        except ValueError as exc:
            raise w.ApiError(w.BAD_REQUEST, str(exc)) from exc
        replica.step_wake()
        log.info("handing leadership over", extra={"ctx": {"partition": replica.pid, "to": to}})
        # Polled: the core is driven by the replica loop and has no event to wait on. The new
        # leader's first Accept (at once after its election) names it here.
        for _ in range(math.ceil((2 * self.options.election_timeout + 0.5) / 0.02)):
            if core.leader_hint == to or (core.handing_over_to is None and not core.is_leader and
                                          core.leader_hint is not None):
                break
            await asyncio.sleep(0.02)
        m.HANDOVERS.labels("done" if core.leader_hint == to else "failed").inc()
        return web.json_response({**replica.status(), "handed_over": core.leader_hint == to})

    async def _membership(self, request: web.Request) -> web.Response:
        """Add or remove one member through the log, then wait for it to commit."""
        replica = self.replica(request.match_info["pid"])
        core = replica.check_serving()
        try:
            doc = await request.json()
            action, member, role = doc["action"], str(doc["member"]), doc.get("role", "replica")
        except (ValueError, KeyError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad membership request: {exc!r}") from exc
        cfg = core.config
        full, logs = set(cfg.replicas), set(cfg.log_replicas)
        if action == "add":
            if member in full | logs:
                return web.json_response(replica.status())
            (logs if role == "log-replica" else full).add(member)
        elif action == "remove":
            if member not in full | logs:
                return web.json_response(replica.status())
            full.discard(member)
            logs.discard(member)
        else:
            raise w.ApiError(w.BAD_REQUEST, f"unknown membership action {action!r}")
        try:
            index = core.propose_config(Config(tuple(full), tuple(logs)))
        except ConfigChangeError as exc:
            raise w.ApiError(w.UNAVAILABLE, f"membership change refused: {exc}") from exc
        replica.step_wake()
        await replica.wait_applied(index, timeout=10.0)
        log.info(
            "membership changed",
            extra={"ctx": {"partition": replica.pid, "action": action, "member": member, "role": role}},
        )
        return web.json_response(replica.status())

    # ------------------------------------------------------------ splits and load
    async def _split(self, request: web.Request) -> web.Response:
        """Split a partition at a position through its own log (leader only).

        At the split entry every replica freezes the parent (reads go on, writes are
        refused with WrongPartition) and seeds both children from the parent's state
        at exactly that index, so no acknowledged write is lost.
        """
        replica = self.replica(request.match_info["pid"])
        core = replica.check_serving()
        try:
            doc = await request.json()
            at = bytes.fromhex(doc["at"])
            children = [str(c["partition_id"]) for c in doc["children"]]
            epoch = int(doc["epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad split request: {exc!r}") from exc
        spec = replica.spec
        if replica.frozen is not None:
            if replica.frozen["children"] == children:
                return web.json_response(self._split_doc(replica))
            raise w.ApiError(w.BAD_REQUEST, f"partition already split into {replica.frozen['children']}")
        if not core.is_leader:
            raise NotLeaderError(core.leader_hint)
        if len(children) != 2 or len(set(children)) != 2 or spec.partition_id in children:
            raise w.ApiError(w.BAD_REQUEST, "a split names two new, distinct child partitions")
        if not (at > spec.start and (spec.end is None or at < spec.end)):
            raise w.ApiError(w.BAD_REQUEST, "the split position must lie strictly inside the partition's range")
        if epoch <= spec.epoch:
            raise w.ApiError(w.BAD_REQUEST, f"the children's epoch must exceed {spec.epoch}")
        if core.config.log_replicas:
            raise w.ApiError(w.UNAVAILABLE, "a repair is in progress (log-replicas present); split after it")
        await replica.propose({"op": "split", "at": at, "children": children, "epoch": epoch})
        return web.json_response(self._split_doc(replica))

    def _split_doc(self, parent: Replica) -> dict[str, Any]:
        info = parent.frozen or {}
        docs = [self.replicas[c].spec.to_doc() for c in info.get("children", []) if c in self.replicas]
        return {"index": info.get("index"), "children": docs}

    async def _seed_children(self, parent: Replica, info: dict[str, Any]) -> None:
        """Create the split's two children here from the parent's frozen state (idempotent)."""
        from kynamo.storage_node.state import PartitionState
        from kynamo.storage_node.wal import WriteAheadLog

        loop = asyncio.get_running_loop()
        at = bytes.fromhex(info["at"])
        spec = parent.spec
        ranges = [(spec.start, at), (at, spec.end)]
        meta = SnapshotMeta(
            int(info["index"]), (int(info["ballot"][0]), str(info["ballot"][1])), Config(tuple(info["replicas"]))
        )
        core = parent.core
        for child_id, (start, end) in zip(info["children"], ranges, strict=True):
            if child_id in self.replicas:
                continue
            directory = self.data_dir / "partitions" / child_id
            child = PartitionSpec(
                partition_id=child_id,
                table=spec.table,
                key_schema=spec.key_schema,
                start=start,
                end=end,
                epoch=int(info["epoch"]),
                role="replica",
                replicas=tuple(info["replicas"]),
                extra={"parent": spec.partition_id},
            )

            def seed(directory: Path = directory, start: bytes = start, end: bytes | None = end,
                     child: PartitionSpec = child) -> None:
                if (directory / "spec.json").exists():
                    return
                shutil.rmtree(directory, ignore_errors=True)  # a half-seeded child from a crash
                directory.mkdir(parents=True)
                parent.state.checkpoint(directory / "state")
                st = PartitionState.open(directory / "state", spec.key_schema)
                st.restrict(start, end)
                st.close()
                wal, _ = WriteAheadLog.open(directory / "wal", retention_entries=0)
                wal.record_snapshot(meta)
                wal.close()
                self._write_spec(child)  # last: marks the child complete

            await loop.run_in_executor(self.executor, seed)
            stored = PartitionSpec.from_doc(json.loads((directory / "spec.json").read_text()))
            replica = await self._open_replica(stored)
            if core is not None and core.is_leader and replica.core is not None:
                replica.core.campaign()  # the parent's leader is as current as any member
                replica.step_wake()
        log.info("split children ready", extra={"ctx": {"parent": spec.partition_id, "children": info["children"]}})

    async def _load(self, request: web.Request) -> web.Response:
        """What the control plane's split planner reads: consumption and the sampled key load."""
        replica = self.replica(request.match_info["pid"])
        spec = replica.spec
        return web.json_response(
            {
                "partition_id": spec.partition_id,
                "wcu": replica.wcu_total,
                "rcu": replica.rcu_total,
                "distribution": [[k.hex(), round(v, 4)] for k, v in replica.hot.distribution()],
                "recent": [k.hex() for k in replica.hot.recent()],
                "item_count": replica.state.item_count() if replica.state is not None else 0,
                "size_bytes": replica.state.size_estimate() if replica.state is not None else 0,
                "epoch": spec.epoch,
                "start": spec.start.hex(),
                "end": None if spec.end is None else spec.end.hex(),
                "is_leader": bool(replica.core and replica.core.is_leader),
                "frozen": replica.frozen is not None,
            }
        )

    # ------------------------------------------------------------ snapshots
    async def _send_snapshot(self, replica: Replica, peer: str) -> None:
        """Checkpoint RocksDB, tar it, and stream it to the lagging peer.

        A log-replica holds no state: it only needs to learn where the leader's log
        starts, so it gets the snapshot's position without the checkpoint.
        """
        assert self._session is not None and replica.core is not None
        core = replica.core
        if peer in core.config.log_replicas:
            start = core.log_start - 1
            entry = core.entry(start)
            meta = core.snapshot or SnapshotMeta(start, entry.ballot if entry else (0, ""), core.config_at(start))
            url = f"http://{api_address(peer)}/v1/partitions/{replica.pid}/snapshot"
            headers = {SNAPSHOT_META_HEADER: _meta_to_json(meta), LOG_ONLY_HEADER: "1"}
            async with self._session.post(url, data=b"", headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"peer answered {resp.status}: {await resp.text()}")
            return
        loop = asyncio.get_running_loop()
        workdir = Path(tempfile.mkdtemp(prefix=f"snap-{replica.pid}-", dir=self.data_dir))
        try:
            meta = await replica.make_checkpoint(workdir / "ckpt")
            tar_path = workdir / "ckpt.tar"

            def pack() -> None:
                with tarfile.open(tar_path, "w") as tar:
                    tar.add(workdir / "ckpt", arcname="ckpt")

            await loop.run_in_executor(self.executor, pack)
            url = f"http://{api_address(peer)}/v1/partitions/{replica.pid}/snapshot"
            with open(tar_path, "rb") as fh:  # noqa: ASYNC230 - aiohttp streams the file in chunks
                async with self._session.post(
                    url, data=fh, headers={SNAPSHOT_META_HEADER: _meta_to_json(meta)}
                ) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"peer answered {resp.status}: {await resp.text()}")
            log.info(
                "snapshot installed on peer",
                extra={"ctx": {"partition": replica.pid, "peer": peer, "index": meta.index}},
            )
        finally:
            await loop.run_in_executor(self.executor, lambda: shutil.rmtree(workdir, ignore_errors=True))

    async def _install_snapshot(self, request: web.Request) -> web.Response:
        replica = self.replica(request.match_info["pid"])
        try:
            meta = _meta_from_json(request.headers[SNAPSHOT_META_HEADER])
        except (KeyError, ValueError, TypeError) as exc:
            raise w.ApiError(w.BAD_REQUEST, f"bad snapshot meta: {exc!r}") from exc
        if replica.is_log_replica:
            await replica.install_log_marker(meta)
            return web.json_response({"installed": meta.index, "log_only": True})
        if request.headers.get(LOG_ONLY_HEADER):
            raise w.ApiError(w.BAD_REQUEST, "a full replica needs the state checkpoint, not only its position")
        loop = asyncio.get_running_loop()
        workdir = Path(tempfile.mkdtemp(prefix=f"recv-{replica.pid}-", dir=self.data_dir))
        try:
            tar_path = workdir / "in.tar"
            with open(tar_path, "wb") as fh:  # noqa: ASYNC230 - chunks are small; disk is local
                async for chunk in request.content.iter_chunked(1 << 20):
                    fh.write(chunk)

            def unpack() -> None:
                with tarfile.open(tar_path) as tar:
                    tar.extractall(workdir, filter="data")

            await loop.run_in_executor(self.executor, unpack)
            await replica.install_checkpoint(workdir / "ckpt", meta)
        finally:
            await loop.run_in_executor(self.executor, lambda: shutil.rmtree(workdir, ignore_errors=True))
        return web.json_response({"installed": meta.index})

    # ------------------------------------------------------------ scrub
    async def _scrub_now(self, request: web.Request) -> web.Response:
        replica = self.replica(request.match_info["pid"])
        report = await self.scrub(replica)
        return web.json_response(report)

    async def _scrub_result(self, request: web.Request) -> web.Response:
        replica = self.replica(request.match_info["pid"])
        index = int(request.match_info["index"])
        if replica.state is None:
            raise w.ApiError(w.BAD_REQUEST, "log-replicas hold no state")
        await replica.wait_applied(index, timeout=10.0)
        result = await asyncio.get_running_loop().run_in_executor(
            self.executor, replica.state.scrub_result, index
        )
        if result is None:
            raise w.ApiError(w.UNAVAILABLE, f"no scrub digest recorded at index {index}")
        return web.json_response({"index": index, "digest": result[1], "count": result[2]})

    async def scrub(self, replica: Replica) -> dict[str, Any]:
        """Record a digest at one log index on every replica and compare them."""
        assert self._session is not None
        core = replica.check_serving()
        if not core.is_leader:
            raise NotLeaderError(core.leader_hint)
        spec = replica.spec
        await replica.propose({"op": "scrub", "start": spec.start, "end": spec.end})
        index = core.applied_index
        # The digest is taken when the scrub entry applies; find its index from our own record.
        own = await asyncio.get_running_loop().run_in_executor(self.executor, replica.state.latest_scrub)
        if own is None:
            raise w.ApiError(w.UNAVAILABLE, "scrub digest missing after apply")
        index, digest, count = own
        digests = {self.member_id: digest}
        for peer in core.config.replicas:
            if peer == self.member_id:
                continue
            url = f"http://{api_address(peer)}/v1/partitions/{replica.pid}/scrub/{index}"
            try:
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    if resp.status == 200:
                        digests[peer] = (await resp.json())["digest"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("scrub peer unreachable", extra={"ctx": {"peer": peer, "error": repr(exc)}})
        divergent = sorted(p for p, d in digests.items() if d != digest)
        m.SCRUB_RUNS.labels(replica.pid).inc()
        if divergent:
            m.SCRUB_DIVERGENCE.labels(replica.pid).inc()
            log.error(
                "scrub found divergent replicas",
                extra={"ctx": {"partition": replica.pid, "index": index, "divergent": divergent}},
            )
        return {"index": index, "count": count, "digests": digests, "divergent": divergent}

    async def _scrub_loop(self) -> None:
        if self.scrub_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.scrub_interval)
            for replica in list(self.replicas.values()):
                core = replica.core
                if core is None or not core.is_leader or replica.corrupt:
                    continue
                with contextlib.suppress(Exception):
                    await self.scrub(replica)

    # ------------------------------------------------------------ repair
    async def _repair(self, replica: Replica) -> None:
        """Repair a replica whose WAL failed its checksum, from its peers.

        Its acknowledgements may be lost, so it must not simply rejoin: it leaves the
        group through the log, comes back empty, and is caught up by snapshot + log.
        """
        from kynamo.storage_node import repair

        await repair.repair_replica(self, replica)


def _as_api_error(exc: Exception, path: str) -> w.ApiError:
    if isinstance(exc, w.ApiError):
        return exc
    if isinstance(exc, NotLeaderError):
        hint = exc.leader_hint
        return w.ApiError(
            w.NOT_LEADER,
            "this replica does not lead its partition",
            leader=hint,
            leader_api=api_address(hint) if hint else None,
        )
    if isinstance(exc, OutcomeUnknown):
        return w.ApiError(w.OUTCOME_UNKNOWN, str(exc))
    if isinstance(exc, PartitionFrozen):
        return w.ApiError(w.WRONG_PARTITION, str(exc), split_into=exc.children, epoch=exc.epoch)
    if isinstance(exc, ReplicaUnavailable):
        return w.ApiError(w.UNAVAILABLE, str(exc))
    log.exception("request failed", extra={"ctx": {"path": path}})
    return w.ApiError(w.INTERNAL, f"internal error: {exc!r}")


def _json_dumps(doc: Any) -> str:
    return json.dumps(doc, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


def _mget_keys(body: dict[str, Any]) -> list[Any]:
    keys = body.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_MGET_KEYS:
        raise w.ApiError(w.BAD_REQUEST, f"keys must be a list of at most {MAX_MGET_KEYS}")
    return keys


def _write_units_of(cmd: dict[str, Any]) -> int:
    subs = cmd["ops"] if cmd.get("op") == "batch" else [cmd]
    total = 0
    for sub in subs:
        total += write_units(_size_of(sub.get("item")) if sub.get("item") else 1)
    return total


def _size_of(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    from kynamo.values import item_size

    return item_size(item)


def _parse_filter_projection(body: dict[str, Any]) -> tuple[Any, Any]:
    flt = proj = None
    if not body.get("filter") and not body.get("projection"):
        return flt, proj
    from kynamo.expressions import ExpressionError, parse_condition, parse_projection, project

    try:
        if body.get("filter"):
            expr, names, values = body["filter"]
            flt = parse_condition(expr, names, values, kind="FilterExpression")
        if body.get("projection"):
            expr, names = body["projection"][:2]
            parsed = parse_projection(expr, names)

            def proj(item: dict[str, Any]) -> dict[str, Any]:
                return project(item, parsed)
    except ExpressionError as exc:
        raise w.ApiError(w.BAD_REQUEST, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise w.ApiError(w.BAD_REQUEST, f"bad filter/projection: {exc!r}") from exc
    return flt, proj


def _page_doc(page: Any, units: float) -> dict[str, Any]:
    return {
        "items": page.items,
        "count": page.count,
        "scanned": page.scanned_count,
        "last": page.last_position,
        "rcu": units,
        "bytes": page.bytes_read,  # the router bills a whole Query/Scan on the bytes of all its pages
    }
