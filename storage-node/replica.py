"""The shell around one Paxos group member: disk, timers, proposals, reads.

The core decides; this class does what it says, in the order `Ready` demands:
persist (one fsync per batch: group commit), send, advance, apply. Blocking work
(WAL writes and fsync, RocksDB batches, checkpoints) runs on the node's thread
pool so the event loop never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kynamo.storage_node import metrics as m
from kynamo.storage_node import read_gate
from kynamo.storage_node.aio_sync import AioSync
from kynamo.storage_node.commands import decode_command, encode_command
from kynamo.storage_node.hotkeys import HotKeys
from kynamo.storage_node.paxos import Options, PaxosCore
from kynamo.storage_node.paxos_types import (
    Accept,
    Config,
    Entry,
    EntryKind,
    Message,
    NotLeaderError,
    Ready,
    SnapshotMeta,
)
from kynamo.storage_node.wal import WalCorruptionError, WriteAheadLog

from kynamo.keycodec import KeySchema
from kynamo.promcache import child

log = logging.getLogger("kynamo.storage_node.replica")

# Zeros kept synced ahead of each WAL's last record: a group-commit fsync then flushes data only
# (see wal.py). 1 MB is 60-odd batches of 16 items under load, and little disk for an idle replica.
WAL_PREALLOCATE = 1 << 20


class ReplicaUnavailable(Exception):
    """The replica cannot serve (corrupt log awaiting repair, closed, or a log-replica)."""


class PartitionFrozen(Exception):
    """The partition split: it serves reads of its final state, writes go to its children."""

    def __init__(self, pid: str, children: list[str], epoch: int) -> None:
        super().__init__(f"partition {pid} split into {children} (epoch {epoch})")
        self.children = children
        self.epoch = epoch


class OutcomeUnknown(Exception):
    """A proposal's fate is unknown (leadership moved before it applied); the client may retry."""


@dataclass
class PartitionSpec:
    """What a replica is: its group, its key range and its place in the routing epoch."""

    partition_id: str
    table: str
    key_schema: KeySchema
    start: bytes = b""
    end: bytes | None = None
    epoch: int = 1
    role: str = "replica"  # or "log-replica"
    replicas: tuple[str, ...] = ()
    log_replicas: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        ks = self.key_schema
        return {
            "partition_id": self.partition_id,
            "table": self.table,
            "key_schema": {"pk": ks.pk, "pk_type": ks.pk_type, "sk": ks.sk, "sk_type": ks.sk_type},
            "start": self.start.hex(),
            "end": None if self.end is None else self.end.hex(),
            "epoch": self.epoch,
            "role": self.role,
            "replicas": list(self.replicas),
            "log_replicas": list(self.log_replicas),
            "extra": self.extra,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PartitionSpec:
        ks = doc["key_schema"]
        end = doc.get("end")
        return cls(
            partition_id=str(doc["partition_id"]),
            table=str(doc.get("table", "")),
            key_schema=KeySchema(ks["pk"], ks["pk_type"], ks.get("sk"), ks.get("sk_type")),
            start=bytes.fromhex(doc.get("start") or ""),
            end=None if end is None else bytes.fromhex(end),
            epoch=int(doc.get("epoch", 1)),
            role=str(doc.get("role", "replica")),
            replicas=tuple(doc.get("replicas", ())),
            log_replicas=tuple(doc.get("log_replicas", ())),
            extra=dict(doc.get("extra") or {}),
        )

    def owns(self, position: bytes) -> bool:
        return position >= self.start and (self.end is None or position < self.end)


@dataclass
class ReplicaEnv:
    """What the hosting process lends each replica."""

    member_id: str
    executor: Executor
    send: Callable[[str, str, Message], None]  # (member id, group, message)
    options: Options
    proposal_timeout: float = 5.0
    max_uncommitted: int = 20_000
    snapshot_sender: Callable[[Replica, str], Any] | None = None
    corruption_handler: Callable[[Replica], Any] | None = None
    split_handler: Callable[[Replica, dict[str, Any]], Any] | None = None
    spec_writer: Callable[[PartitionSpec], None] | None = None
    external_ticks: bool = False  # the hosting process ticks every replica from one timer
    aio: AioSync | None = None  # WAL fdatasync without a thread (aio_sync.py); None: the executor syncs


async def sync_wal(wal: WriteAheadLog, aio: AioSync, loop: asyncio.AbstractEventLoop, executor: Executor) -> float:
    """Make every append so far durable; returns seconds taken.

    One fdatasync through the kernel's AIO workqueue when that is all it takes: no thread has to
    win the GIL first. A sync with more to do (a roll, zeros to fill ahead), or one the AIO
    context has no room for (many groups of this process syncing at once), runs in a thread.
    """
    t0 = time.perf_counter()
    ticket = wal.begin_sync()
    if ticket is not None:
        ok = False
        try:
            await aio.fdatasync(ticket.fd)
            ok = True
        except BlockingIOError:
            pass  # the context is full: the thread below does this one
        finally:
            wal.end_sync(ticket, ok)
        if ok:
            return time.perf_counter() - t0
    await loop.run_in_executor(executor, wal.sync)
    return time.perf_counter() - t0


class Replica:
    """One member of one partition's group, hosted by a storage-node process."""

    def __init__(self, spec: PartitionSpec, directory: Path, env: ReplicaEnv) -> None:
        self.spec = spec
        self.dir = directory
        self.env = env
        self.pid = spec.partition_id
        self.core: PaxosCore | None = None
        self.wal: WriteAheadLog | None = None
        self.state: Any = None  # PartitionState for full replicas
        self.serving = False
        self.corrupt: str | None = None
        self.hot = HotKeys()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._waiters: dict[int, tuple[bytes, asyncio.Future[Any]]] = {}
        self._applied_event = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._apply_queue: list[Entry] = []
        self._apply_wake = asyncio.Event()
        self._closed = False
        self._last_applied_ballot: tuple[int, str] = (0, "")
        self._last_compact = 0
        self._snapshot_inflight: set[str] = set()
        self._last_leader: str | None = None
        self._stats_seen: dict[str, int] = {}
        self._synced_promise: tuple[int, str] | None = None
        self.frozen: dict[str, Any] | None = None  # set once a split entry applied: reads only
        self._split_pending: dict[str, Any] | None = None
        self.wcu_total = 0.0
        self.rcu_total = 0.0
        self._read_gate = read_gate.GateState()
        self._installing = False
        m.declare(self.pid)
        self._wal_bytes = m.WAL_BYTES.labels(self.pid)
        self._wal_fsync = m.WAL_FSYNC.labels(self.pid)

    # ------------------------------------------------------------ lifecycle
    @property
    def is_log_replica(self) -> bool:
        return self.spec.role == "log-replica"

    def open_sync(self) -> None:
        """Recover WAL and state from disk (blocking: call from the executor)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            wal, rec = WriteAheadLog.open(self.dir / "wal", retention_entries=0, preallocate=WAL_PREALLOCATE)
        except WalCorruptionError as exc:
            self.corrupt = f"WAL checksum failure in {exc}"
            m.WAL_CORRUPTION.labels(self.pid).inc()
            m.REPLICA_HEALTHY.labels(self.pid).set(0)
            log.error(
                "WAL corruption: replica refuses to serve until repaired from a peer",
                extra={"ctx": {"partition": self.pid, "error": str(exc)}},
            )
            return
        self.wal = wal
        if not self.is_log_replica:
            from kynamo.storage_node.state import PartitionState

            self.state = PartitionState.open(self.dir / "state", self.spec.key_schema)
            if self.state.applied_ballot is not None:
                self._last_applied_ballot = tuple(self.state.applied_ballot)
        bootstrap = Config(self.spec.replicas, self.spec.log_replicas)
        split = self.spec.extra.get("split")
        if split and self.state is not None and self.state.applied_index >= int(split["index"]):
            self.frozen = split
        seed = int.from_bytes(self.env.member_id.encode()[-8:].rjust(8, b"\0"), "big") ^ hash(self.pid)
        self.core = PaxosCore(
            self.env.member_id,
            bootstrap,
            options=self.env.options,
            rng=random.Random(seed ^ time.monotonic_ns()),
            hard_state=rec.hard_state,
            entries=rec.entries,
            snapshot=rec.snapshot,
            now=time.monotonic(),
            is_log_replica=self.is_log_replica,
        )
        self.serving = True
        m.REPLICA_HEALTHY.labels(self.pid).set(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.env.executor, self.open_sync)
        if self.corrupt:
            if self.env.corruption_handler is not None:
                self._tasks.append(asyncio.create_task(self.env.corruption_handler(self)))
            return
        self._tasks.append(asyncio.create_task(self._run(), name=f"replica-{self.pid}-run"))
        self._tasks.append(asyncio.create_task(self._applier(), name=f"replica-{self.pid}-apply"))
        if not self.env.external_ticks:
            self._tasks.append(asyncio.create_task(self._ticker(), name=f"replica-{self.pid}-tick"))
        self._tasks.append(asyncio.create_task(self._exporter(), name=f"replica-{self.pid}-export"))

    async def stop(self) -> None:
        self._closed = True
        self._wake.set()
        self._apply_wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for _, fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ReplicaUnavailable("replica stopped"))
        self._waiters.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.env.executor, self._close_sync)
        self.serving = False

    def _close_sync(self) -> None:
        if self.wal is not None:
            self.wal.close()
        if self.state is not None:
            self.state.close()

    async def destroy(self) -> None:
        await self.stop()
        await asyncio.get_running_loop().run_in_executor(
            self.env.executor, lambda: shutil.rmtree(self.dir, ignore_errors=True)
        )

    # ------------------------------------------------------------ driving the core
    def step(self, msg: Message) -> None:
        if self.core is None or self._closed:
            return
        self.core.step(msg)
        self._wake.set()

    def step_wake(self) -> None:
        """Wake the loop after the core was driven directly (campaign, config change)."""
        self._wake.set()

    def tick(self, now: float) -> None:
        """Advance the core's clock (the only way time reaches it)."""
        if self.core is not None and not self._closed and self._tasks:
            self.core.tick(now)
            self._wake.set()
            self._advance_read_gate(now)

    async def _ticker(self) -> None:
        interval = max(0.005, self.env.options.heartbeat_interval / 2)
        while not self._closed:
            await asyncio.sleep(interval)
            self.tick(time.monotonic())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        assert core is not None
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while not self._closed:
                ready = core.ready()
                if ready.empty():
                    break
                try:
                    await self._handle_ready(loop, core, ready)
                except Exception:
                    log.exception("replica loop failed", extra={"ctx": {"partition": self.pid}})
                    self.serving = False
                    m.REPLICA_HEALTHY.labels(self.pid).set(0)
                    return

    async def _handle_ready(self, loop: asyncio.AbstractEventLoop, core: PaxosCore, ready: Ready) -> None:
        hs = ready.hard_state
        messages = ready.messages
        if ready.entries and core.is_leader:
            # A leader's proposals need no local durability before peers see them (its own
            # acceptance counts only after advance()), so phase 2a overlaps its fsync.
            early = [msg for msg in messages if type(msg) is Accept]
            if early:
                messages = [msg for msg in messages if type(msg) is not Accept]
                for msg in early:
                    self.env.send(msg.dst, self.pid, msg)
        if ready.entries or (hs is not None and hs.promised != self._synced_promise):
            # Entries and promises must be durable before anyone hears of them: one fsync.
            wal = self.wal
            assert wal is not None

            if self.env.aio is not None:  # append on the loop (into the page cache), sync without a thread
                written = wal.append(hs, ready.entries)
                took = await sync_wal(wal, self.env.aio, loop, self.env.executor)
            else:
                def persist() -> tuple[int, float]:
                    written = wal.append(hs, ready.entries)
                    return written, wal.sync()

                written, took = await loop.run_in_executor(self.env.executor, persist)
            if hs is not None:
                self._synced_promise = hs.promised
            self._wal_bytes.inc(written)
            self._wal_fsync.observe(took)
        elif hs is not None:
            # Only the commit point moved: it can be re-learned from the leader, so it rides
            # along unsynced and the next fsync covers it (saves one fsync per write).
            assert self.wal is not None
            self._wal_bytes.inc(self.wal.append(hs, ()))
        for msg in messages:
            self.env.send(msg.dst, self.pid, msg)
        core.advance(ready)
        if ready.committed:
            # Applying overlaps the next batch's fsync: the applier task drains in log order.
            self._apply_queue.extend(ready.committed)
            self._apply_wake.set()
        for peer in ready.snapshot_to:
            if peer not in self._snapshot_inflight and self.env.snapshot_sender is not None:
                self._snapshot_inflight.add(peer)
                self._tasks.append(asyncio.create_task(self._send_snapshot(peer)))

    async def _applier(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        assert core is not None
        while not self._closed:
            await self._apply_wake.wait()
            self._apply_wake.clear()
            while self._apply_queue and not self._closed:
                batch, self._apply_queue = self._apply_queue, []
                try:
                    async with self._apply_lock:
                        await self._apply(loop, core, batch)
                except Exception:
                    log.exception("apply failed; replica stops serving", extra={"ctx": {"partition": self.pid}})
                    self.serving = False
                    m.REPLICA_HEALTHY.labels(self.pid).set(0)
                    return

    async def _apply(self, loop: asyncio.AbstractEventLoop, core: PaxosCore, committed: list[Entry]) -> None:
        results: list[Any] = [None] * len(committed)
        live = committed
        if self.frozen is None and self.state is not None:
            cut = _split_position(committed)
            if cut is not None:
                live = committed[: cut + 1]
                await self._begin_split(committed[cut])
        elif self.frozen is not None:
            live = []
        if self.state is not None and live:
            batch = [(e.index, e.data if e.kind == EntryKind.COMMAND else None) for e in live]
            # The commands run here, on the loop (reads only), and so does the RocksDB write
            # unless it would stall (then a thread writes it). A thread running the commands
            # too would fight this loop for the GIL.
            prepared = self.state.prepare(batch, live[-1].ballot)
            if prepared is None:  # a scrub among them: its view is pinned under the state's lock
                results[: len(live)] = await loop.run_in_executor(
                    self.env.executor, self.state.apply, batch, live[-1].ballot
                )
            else:
                if not self.state.try_write_prepared(prepared):  # it would block: a thread's job
                    child(m.APPLY_OFFLOADED, self.pid).inc()
                    prepared = self.state.prepare(batch, live[-1].ballot)
                    assert prepared is not None
                    await loop.run_in_executor(self.env.executor, self.state.write_prepared, prepared)
                results[: len(live)] = prepared.results
        if self._split_pending is not None:
            await self._finish_split()
        frozen_from = committed[len(live)].index if len(live) < len(committed) else None
        for entry, result in zip(committed, results, strict=True):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is not None:
                data, fut = waiter
                if fut.done():
                    continue
                if frozen_from is not None and entry.index >= frozen_from:
                    fut.set_exception(self.frozen_error())
                elif data == entry.data:
                    fut.set_result(result)
                else:
                    fut.set_exception(OutcomeUnknown("another proposal took this log slot"))
        last = committed[-1]
        self._last_applied_ballot = last.ballot
        core.applied_to(last.index)
        self._applied_event.set()
        self._applied_event = asyncio.Event()
        if self.state is not None and last.index - self._last_compact >= self.env.options.log_replica_retention:
            await self._compact(loop, core, last.index)

    # ------------------------------------------------------------ splits
    async def _begin_split(self, entry: Entry) -> None:
        """Record the split in the spec before the state passes its index (crash-safe order)."""
        cmd = decode_command(entry.data)
        core = self.core
        assert core is not None
        info = {
            "index": entry.index,
            "ballot": list(entry.ballot),
            "at": bytes(cmd["at"]).hex(),
            "children": [str(c) for c in cmd["children"]],
            "epoch": int(cmd["epoch"]),
            "replicas": list(core.config_at(entry.index).replicas),
        }
        self.spec.extra["split"] = info
        if self.env.spec_writer is not None:
            await asyncio.get_running_loop().run_in_executor(self.env.executor, self.env.spec_writer, self.spec)
        self._split_pending = info

    async def _finish_split(self) -> None:
        info, self._split_pending = self._split_pending, None
        self.frozen = info
        m.SPLITS.labels(self.pid).inc()
        log.info("partition split: parent frozen, children seeded",
                 extra={"ctx": {"partition": self.pid, "index": info["index"], "children": info["children"]}})
        if self.env.split_handler is not None:
            await self.env.split_handler(self, info)

    def frozen_error(self) -> Exception:
        info = self.frozen or {}
        return PartitionFrozen(self.pid, list(info.get("children", [])), int(info.get("epoch", 0)))

    async def _compact(self, loop: asyncio.AbstractEventLoop, core: PaxosCore, applied: int) -> None:
        """Let the log go behind state that RocksDB holds durably, keeping a retention window."""
        keep = self.env.options.log_replica_retention
        upto = applied - keep
        if upto <= max(self._last_compact, core.log_start - 1):
            return
        entry = core.entry(upto)
        meta = SnapshotMeta(upto, entry.ballot if entry else self._last_applied_ballot, core.config_at(upto))
        wal = self.wal
        state = self.state
        assert wal is not None and state is not None

        def durable() -> None:
            state.flush()
            wal.record_snapshot(meta)
            wal.compact(upto)

        await loop.run_in_executor(self.env.executor, durable)
        core.compact(meta)
        self._last_compact = applied

    # ------------------------------------------------------------ client operations
    def check_serving(self) -> PaxosCore:
        if self.corrupt:
            raise ReplicaUnavailable(f"replica needs repair: {self.corrupt}")
        if not self.serving or self.core is None:
            raise ReplicaUnavailable("replica is not serving")
        return self.core

    async def propose(self, command: dict[str, Any]) -> Any:
        """Replicate one command; returns its apply result once it is applied here."""
        core = self.check_serving()
        if self.is_log_replica:
            raise NotLeaderError(core.leader_hint)
        if self.frozen is not None or self._split_pending is not None:
            raise self.frozen_error()
        if core.last_index - core.commit_index >= self.env.max_uncommitted:
            # Followers are not keeping up: refuse rather than grow the log without bound.
            raise ReplicaUnavailable(
                f"{core.last_index - core.commit_index} entries await commit; retry with backoff"
            )
        data = encode_command(command)
        index = core.propose(data)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[index] = (data, fut)
        self._wake.set()
        try:
            async with asyncio.timeout(self.env.proposal_timeout):  # no task per proposal, unlike wait_for
                return await fut
        except TimeoutError as exc:
            self._waiters.pop(index, None)
            raise OutcomeUnknown(f"proposal at index {index} not applied in time") from exc

    async def wait_applied(self, index: int, timeout: float = 5.0) -> None:
        core = self.check_serving()
        deadline = time.monotonic() + timeout
        while core.applied_index < index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OutcomeUnknown(f"index {index} not applied in time")
            event = self._applied_event
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()

    async def read_barrier(self) -> None:
        """Make the local state at least as new as every write acknowledged before now.

        Under a valid lease that is free; otherwise the leader commits a no-op
        through the log (a quorum round) and waits until it applies.
        """
        core = self.check_serving()
        if self.state is None:
            raise ReplicaUnavailable("log-replicas hold no state")
        index = core.lease_read_index()
        if index is None:
            if not core.is_leader:
                raise NotLeaderError(core.leader_hint)
            await self.propose({"op": "noop"})
            return
        await self.wait_applied(index)

    def read_ready(self) -> bool:
        """Would `read_barrier` return without waiting (a valid lease, and the state applied up to it)?"""
        core = self.check_serving()
        index = core.lease_read_index()
        return self.state is not None and index is not None and core.applied_index >= index

    def _read_view(self, core: PaxosCore) -> read_gate.FollowerView:
        return read_gate.FollowerView(core.applied_index, core.leader_commit, core.leader_contact, self._installing)

    def _advance_read_gate(self, now: float) -> read_gate.GateState:
        core = self.core
        if core is None or self.state is None:
            return self._read_gate
        if core.is_leader:  # serves anyway; once deposed it must catch up with the new leader first
            self._read_gate = _GATE_UNSYNCED
            return self._read_gate
        opts = self.env.options
        self._read_gate = read_gate.advance(
            self._read_gate, self._read_view(core), now, horizon=opts.election_timeout, max_lag=opts.max_read_lag
        )
        return self._read_gate

    def check_eventual_read(self) -> None:
        """Refuse an eventually consistent read on a follower that has not caught up (the leader always serves).

        Raises ReplicaUnavailable, which clients retry on another member; counted in kynamo_storage_reads_refused_total.
        """
        core = self.check_serving()
        if core.is_leader or self.state is None:
            return
        now = time.monotonic()
        gate = self._advance_read_gate(now)
        why = read_gate.refusal(gate, self._read_view(core), now, horizon=self.env.options.election_timeout)
        if why is not None:
            m.READS_REFUSED.labels(self.pid).inc()
            raise ReplicaUnavailable(why)

    @contextlib.asynccontextmanager
    async def _installing_state(self) -> Any:
        """Mark a snapshot install in progress: the local state is being replaced, reads must go elsewhere."""
        self._installing = True
        try:
            yield
        finally:
            self._installing = False
            self._read_gate = read_gate.GateState()

    def record_load(self, position: bytes, units: float) -> None:
        self.hot.record(position, units)

    # ------------------------------------------------------------ snapshots
    async def _send_snapshot(self, peer: str) -> None:
        try:
            assert self.env.snapshot_sender is not None
            await self.env.snapshot_sender(self, peer)
            m.SNAPSHOTS_SENT.labels(self.pid).inc()
        except Exception as exc:
            log.warning(
                "snapshot install to peer failed; will retry when the core asks again",
                extra={"ctx": {"partition": self.pid, "peer": peer, "error": repr(exc)}},
            )
        finally:
            self._snapshot_inflight.discard(peer)

    async def make_checkpoint(self, dest: Path) -> SnapshotMeta:
        """A consistent RocksDB checkpoint plus the log position and membership it covers."""
        async with self._apply_lock:
            state = self.state
            assert state is not None and self.core is not None
            info = await asyncio.get_running_loop().run_in_executor(self.env.executor, state.checkpoint, dest)
            index = info.index
            return SnapshotMeta(index, self._last_applied_ballot, self.core.config_at(index))

    async def install_log_marker(self, meta: SnapshotMeta) -> None:
        """A log-replica's snapshot install: no state, only 'the log before this is covered'."""
        core = self.core
        if core is None or (meta.index <= core.commit_index and meta.index < core.log_start):
            return
        async with self._apply_lock:
            wal = self.wal
            assert wal is not None
            await asyncio.get_running_loop().run_in_executor(self.env.executor, wal.record_snapshot, meta)
            core.install_snapshot(meta)
        self._wake.set()

    async def install_checkpoint(self, src: Path, meta: SnapshotMeta) -> None:
        """Replace local state with a peer's checkpoint and move the log past it."""
        core = self.core
        if core is None:
            raise ReplicaUnavailable("replica not open")
        if meta.index <= core.applied_index:
            return
        async with self._apply_lock, self._installing_state():
            loop = asyncio.get_running_loop()
            from kynamo.storage_node.state import PartitionState

            def install() -> Any:
                if self.state is not None:
                    self.state.close()
                st = PartitionState.install(self.dir / "state", src, self.spec.key_schema)
                assert self.wal is not None
                self.wal.record_snapshot(meta)
                return st

            self.state = await loop.run_in_executor(self.env.executor, install)
            core.install_snapshot(meta)
            self._last_applied_ballot = meta.ballot
            self._last_compact = meta.index
            for index in [i for i in self._waiters if i <= meta.index]:
                _, fut = self._waiters.pop(index)
                if not fut.done():
                    fut.set_exception(OutcomeUnknown("state replaced by a snapshot"))
        m.SNAPSHOTS_INSTALLED.labels(self.pid).inc()
        self._wake.set()

    # ------------------------------------------------------------ observability
    def status(self) -> dict[str, Any]:
        core = self.core
        doc: dict[str, Any] = {
            "partition_id": self.pid,
            "table": self.spec.table,
            "role": self.spec.role,
            "epoch": self.spec.epoch,
            "serving": self.serving and not self.corrupt,
            "corrupt": self.corrupt,
            "frozen": self.frozen is not None,
            "split": self.spec.extra.get("split"),
            "start": self.spec.start.hex(),
            "end": None if self.spec.end is None else self.spec.end.hex(),
        }
        if core is not None:
            cfg = core.config
            doc.update(
                leader=core.leader_hint,
                is_leader=core.is_leader,
                ballot=list(core.ballot),
                commit_index=core.commit_index,
                applied_index=core.applied_index,
                last_index=core.last_index,
                log_start=core.log_start,
                replicas=list(cfg.replicas),
                log_replicas=list(cfg.log_replicas),
            )
        if self.state is not None:
            doc["item_count"] = self.state.item_count()
            doc["size_bytes"] = self.state.size_estimate()
        doc["hot_keys"] = [[k.hex(), round(s, 4)] for k, s in self.hot.top(5)]
        return doc

    async def _exporter(self) -> None:
        while not self._closed:
            await asyncio.sleep(1.0)
            self.export_metrics()
            if self.is_log_replica:
                await self._compact_log_replica()

    async def _compact_log_replica(self) -> None:
        """Persist where retention cut a log-replica's log, and drop the segments behind it."""
        core, wal = self.core, self.wal
        if core is None or wal is None or core.snapshot is None:
            return
        meta = core.snapshot
        if meta.index <= self._last_compact:
            return

        def durable() -> None:
            wal.record_snapshot(meta)
            wal.compact(meta.index)

        await asyncio.get_running_loop().run_in_executor(self.env.executor, durable)
        self._last_compact = meta.index

    def export_metrics(self) -> None:
        core = self.core
        if core is None:
            return
        pid = self.pid
        m.COMMIT_INDEX.labels(pid).set(core.commit_index)
        m.APPLIED_INDEX.labels(pid).set(core.applied_index)
        m.REPLICATION_LAG.labels(pid).set(max(0, core.commit_index - core.applied_index))
        m.IS_LEADER.labels(pid).set(1 if core.is_leader else 0)
        m.BALLOT.labels(pid).set(core.ballot[0])
        stats = core.stats()
        for key, counter in (
            ("elections_started", m.ELECTIONS_STARTED),
            ("elections_won", m.ELECTIONS_WON),
            ("leader_changes", m.LEADER_CHANGES),
        ):
            now = int(stats.get(key, 0))
            delta = now - self._stats_seen.get(key, 0)
            if delta > 0:
                counter.labels(pid).inc(delta)
            self._stats_seen[key] = now
        if self.state is not None:
            m.ITEM_COUNT.labels(pid).set(self.state.item_count())
            m.SIZE_BYTES.labels(pid).set(self.state.size_estimate())
        for rank, (_, share) in enumerate(self.hot.top(5), start=1):
            m.HOT_KEY.labels(pid, str(rank)).set(share)


_GATE_UNSYNCED = read_gate.GateState()
_SPLIT_MARK = b"\xa5split"  # msgpack of the string "split": a cheap pre-check before decoding


def _split_position(entries: list[Entry]) -> int | None:
    for pos, entry in enumerate(entries):
        if entry.kind == EntryKind.COMMAND and _SPLIT_MARK in entry.data:
            try:
                if decode_command(entry.data).get("op") == "split":
                    return pos
            except Exception:
                continue
    return None


def write_units(size: int) -> int:
    """DynamoDB bills writes in 1 KB units, rounded up, at least one."""
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    """Reads are billed in 4 KB units; eventually consistent reads cost half."""
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


__all__ = [
    "OutcomeUnknown",
    "PartitionFrozen",
    "PartitionSpec",
    "Replica",
    "ReplicaEnv",
    "ReplicaUnavailable",
    "decode_command",
    "read_units",
    "write_units",
]
