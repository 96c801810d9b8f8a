"""One replica's partition state in RocksDB: items, applied index, counters, scrub digests.

The replicated log is the durable record, so an applied batch skips RocksDB's own WAL
(no fsync, and no second copy of every item written): after a crash the memtable is gone
and the replica replays its log from the snapshot marker, skipping what the state already
holds. Every batch carries its applied index atomically with its writes, so replay never
double-applies, and the log is only cut behind a `flush()` of the state.

Key layout: b"d" + position -> msgpack(item); b"m" + name -> msgpack(metadata).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from kynamo.storage_node.commands import apply_command, decode_command, position_of
from rocksdict import BlockBasedOptions, Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from kynamo import keycodec
from kynamo.keycodec import KeySchema, sk_range

log = logging.getLogger("kynamo.storage_node.state")

Item = dict[str, Any]
SkCondition = tuple

DATA = b"d"
DATA_END = b"e"  # first key after every data key
META = b"m"
SCRUB_PREFIX = b"mscrub:"
KEEP_SCRUBS = 4


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@dataclass(slots=True)
class QueryPage:
    items: list[Item]
    count: int
    scanned_count: int
    last_position: bytes | None
    bytes_read: int


@dataclass(slots=True)
class PreparedApply:
    """Committed entries turned into one RocksDB batch, not yet written (PartitionState.prepare)."""

    batch: WriteBatch
    applied: int
    count: int
    nbytes: int
    base: int  # the applied index it was prepared on
    results: list[Any]


def _is_scrub(data: bytes) -> bool:
    try:
        cmd = decode_command(data)
    except Exception:
        return False
    return isinstance(cmd, dict) and cmd.get("op") == "scrub"


def _has_scrub(entries: list[tuple[int, bytes | None]]) -> bool:
    return any(data is not None and b"scrub" in data and _is_scrub(data) for _, data in entries)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    index: int
    path: Path


_APPLY = WriteOptions()
_APPLY.disable_wal = True
_NO_SLOWDOWN = WriteOptions()
_NO_SLOWDOWN.disable_wal = True
_NO_SLOWDOWN.no_slowdown = True


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    # A whole-key bloom filter on the memtable: every put first reads the item it replaces
    # (conditions, sizes), and for a new item that miss otherwise walks the whole skiplist.
    opts.set_memtable_prefix_bloom_ratio(0.02)
    opts.set_memtable_whole_key_filtering(True)
    # The same for the files flushed from it: without a bloom filter, each such miss binary-searches
    # every L0 file and level (measured with three L0 files: 7.5 us a miss, 0.5 us with 10 bits a key;
    # the first grows with the files).
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _matches(flt: Any, item: Item) -> bool:
    """Filters are duck-typed: an object with .evaluate, a callable, or a parsed condition."""
    if flt is None:
        return True
    if type(flt).__module__.startswith("kynamo.expressions"):
        from kynamo.expressions import evaluate_condition

        return bool(evaluate_condition(flt, item))
    evaluate = getattr(flt, "evaluate", None)
    if evaluate is not None:
        return bool(evaluate(item))
    if callable(flt):
        return bool(flt(item))
    from kynamo.expressions import evaluate_condition

    return bool(evaluate_condition(flt, item))


def _item_size(item: Item) -> int:
    from kynamo.values import item_size

    return item_size(item)


class _Digest:
    """Order-sensitive hash of (position, stored item bytes) pairs over a range."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self.count = 0

    def add(self, key: bytes, value: bytes) -> None:
        self._h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class PartitionState:
    """RocksDB state of one partition replica; apply() is the only writer of item data."""

    def __init__(self, db: Rdict, path: Path, key_schema: KeySchema) -> None:
        self._db = db
        self.path = path
        self.key_schema = key_schema
        self._lock = threading.Lock()  # one applier at a time; readers never take it
        self._applied = self._meta_get("applied_index", 0)
        self._count = self._meta_get("item_count", 0)
        self._bytes = self._meta_get("data_bytes", 0)
        # Scrub index -> (iterator pinned at that index, start, end): an unread RocksDB
        # iterator holds an implicit snapshot, so the digest can be computed lazily yet exactly.
        self._scrub_views: dict[int, tuple[Any, bytes, bytes | None]] = {}
        self._scrub_lock = threading.Lock()  # guards _scrub_views; one digest computation at a time
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        key_schema: KeySchema | None = None,
        *,
        partition_id: str | None = None,
        start: bytes = b"",
        end: bytes | None = None,
        epoch: int | None = None,
    ) -> PartitionState:
        """Open (or create) the database; creation-time metadata is recorded only once."""
        path = Path(path)
        _recover_install(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = Rdict(str(path), _options())
        stored = db.get(META + b"key_schema")
        if stored is not None:
            stored_schema = KeySchema.from_dict(_unpack(stored))
            if key_schema is not None and key_schema != stored_schema:
                db.close()
                raise ValueError(f"key schema {key_schema} differs from the stored {stored_schema}")
            key_schema = stored_schema
        elif key_schema is None:
            db.close()
            raise ValueError("a new partition state needs a key schema")
        else:
            wb = WriteBatch(raw_mode=True)
            wb.put(META + b"key_schema", _pack(key_schema.to_dict()))
            wb.put(META + b"partition", _pack({"id": partition_id, "start": start, "end": end, "epoch": epoch}))
            db.write(wb)
        return cls(db, path, key_schema)

    @classmethod
    def install(
        cls, path: str | os.PathLike, checkpoint_dir: str | os.PathLike, key_schema: KeySchema | None = None
    ) -> PartitionState:
        """Replace the (closed) database at path with a received checkpoint, by renames, and open it."""
        path = Path(path)
        incoming, old = _side_paths(path)
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.move(str(checkpoint_dir), str(incoming))
        _fsync_dir(path.parent)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(incoming, path)  # the commit point: from here the checkpoint is the state
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
        return cls.open(path, key_schema)

    def flush(self) -> None:
        """Make everything applied durable in RocksDB itself (before the log behind it is dropped)."""
        self._db.flush(True)
        self._db.flush_wal(True)

    def close(self) -> None:
        # Taking the apply lock waits out an apply still running on a worker thread
        # (its asyncio task may have been cancelled): RocksDB must not close under it.
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._scrub_lock:
                self._scrub_views.clear()
            self._db.close()

    # ------------------------------------------------------------ metadata
    def _meta_get(self, name: str, default: Any = None) -> Any:
        raw = self._db.get(META + name.encode())
        return default if raw is None else _unpack(raw)

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def applied_ballot(self) -> Any:
        ballot = self._meta_get("applied_ballot")
        return tuple(ballot) if ballot is not None else None

    @property
    def partition_meta(self) -> dict:
        return self._meta_get("partition", {})

    def item_count(self) -> int:
        return self._count

    def size_estimate(self) -> int:
        """Bytes of stored keys and items (maintained with every batch, so exact)."""
        return self._bytes

    # ------------------------------------------------------------ apply
    def apply(self, entries: Iterable[tuple[int, bytes | None]], ballot: Any = None) -> list[Any]:
        """Apply committed entries in order; one atomic RocksDB write carries writes and applied index.

        A scrub entry cuts the batch in two (each part atomic with its own index) so its digest
        sees the state at exactly its index.
        """
        entries = list(entries)
        prepared = self.prepare(entries, ballot)  # None when a scrub is among them
        if prepared is None:
            return self._apply_with_scrubs(entries, ballot)
        self.write_prepared(prepared)
        return prepared.results

    def prepare(
        self, entries: list[tuple[int, bytes | None]], ballot: Any = None, *, allow_scrub: bool = False
    ) -> PreparedApply | None:
        """The RocksDB batch and client results of committed entries, without writing anything.

        Only reads (the current items the commands look at), so a node runs it on its event
        loop, as it serves GetItem, and hands only `write_prepared` (the write that can stall)
        to a thread: the Python work stays on one thread instead of contending for the GIL.
        The caller writes each prepared batch before preparing the next. None when a scrub
        entry is among them (use `apply`).
        """
        if not allow_scrub and _has_scrub(entries):
            return None
        if self._closed:
            raise RuntimeError("partition state is closed")
        results: list[Any] = []
        batch = WriteBatch(raw_mode=True)
        overlay: dict[bytes, bytes | None] = {}
        applied, count, nbytes = self._applied, self._count, self._bytes
        db_get, schema = self._db.get, self.key_schema

        def current(key: dict) -> Item | None:
            dkey = DATA + position_of(key, schema)
            if dkey in overlay:
                raw = overlay[dkey]
            else:
                raw = overlay[dkey] = db_get(dkey)
            return None if raw is None else _unpack(raw)

        for index, data in entries:
            if index <= applied:
                results.append(None)  # replay of an entry already in the state
                continue
            applied = index
            if data is None:
                results.append(None)
                continue
            try:
                cmd = decode_command(data)
            except Exception as exc:
                results.append({"err": "ValidationException", "msg": f"undecodable command: {exc!r}"})
                continue
            writes, result = apply_command(cmd, current, schema)
            for pos, item in writes:
                dkey = DATA + pos
                old = overlay[dkey] if dkey in overlay else db_get(dkey)
                new = None if item is None else _pack(item)
                if old is not None:
                    count -= 1
                    nbytes -= len(dkey) + len(old)
                if new is not None:
                    count += 1
                    nbytes += len(dkey) + len(new)
                    batch.put(dkey, new)
                else:
                    batch.delete(dkey)
                overlay[dkey] = new
            results.append(result)
        if applied != self._applied:
            batch.put(META + b"applied_index", _pack(applied))
            batch.put(META + b"item_count", _pack(count))
            batch.put(META + b"data_bytes", _pack(nbytes))
            if ballot is not None:
                batch.put(META + b"applied_ballot", _pack(list(ballot)))
        return PreparedApply(batch, applied, count, nbytes, self._applied, results)

    def write_prepared(self, prepared: PreparedApply) -> None:
        """Write a prepared batch (blocking: a thread's job). Refused if the state moved since it was prepared."""
        with self._lock:
            if self._closed:
                raise RuntimeError("partition state is closed")
            if self._applied != prepared.base:
                raise RuntimeError(f"state moved to {self._applied} since the batch was prepared at {prepared.base}")
            self._write_locked(prepared)

    def try_write_prepared(self, prepared: PreparedApply) -> bool:
        """Write a prepared batch only if that cannot block: False, with nothing written, otherwise.

        A memtable insert costs microseconds; handing it to a thread costs far more (the
        wakeups and GIL handoffs on both sides). RocksDB's `no_slowdown` refuses a write it
        would otherwise stall for a flush or compaction, and the lock is only tried, so the
        event loop can call this and fall back to `write_prepared` in a thread. A refused
        batch is consumed: prepare it again for the fallback.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._applied != prepared.base:
                return False
            try:
                self._write_locked(prepared, _NO_SLOWDOWN)
            except Exception as exc:  # Incomplete: RocksDB would have stalled
                log.debug("on-loop write refused: %s", exc)
                return False
            return True
        finally:
            self._lock.release()

    def _write_locked(self, prepared: PreparedApply, options: WriteOptions | None = None) -> None:
        if prepared.applied != self._applied:
            self._db.write(prepared.batch, options or _APPLY)
            self._applied, self._count, self._bytes = prepared.applied, prepared.count, prepared.nbytes

    def _apply_with_scrubs(self, entries: list[tuple[int, bytes | None]], ballot: Any) -> list[Any]:
        """apply() for batches holding scrub entries: each scrub pins a view at exactly its index."""
        results: list[Any] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("partition state is closed")
            start = 0
            for i, (index, data) in enumerate(entries):
                last = i == len(entries) - 1
                scrub = data is not None and _is_scrub(data)
                if not (scrub or last):
                    continue
                prepared = self.prepare(entries[start : i + 1], ballot, allow_scrub=True)
                assert prepared is not None
                self._write_locked(prepared)
                results += prepared.results
                if scrub and index == self._applied:
                    cmd = decode_command(data)
                    self._pin_scrub(index, cmd.get("start") or b"", cmd.get("end"))
                start = i + 1
        return results

    # ------------------------------------------------------------ reads
    def get(self, key_item: dict, projection: Callable[[Item], Item] | None = None) -> Item | None:
        raw = self._db.get(DATA + keycodec.position(self.key_schema, key_item))
        if raw is None:
            return None
        item = _unpack(raw)
        return projection(item) if projection is not None else item

    def query(self, pk_value: dict, sk_condition: SkCondition | None = None, **options: Any) -> QueryPage:
        """One whole Query page; `options` as query_reader's."""
        return self.query_reader(pk_value, sk_condition, **options).finish()

    def query_reader(
        self,
        pk_value: dict,
        sk_condition: SkCondition | None = None,
        *,
        forward: bool = True,
        limit: int | None = None,
        start_position: bytes | None = None,
        filter: Any = None,
        projection: Callable[[Item], Item] | None = None,
        max_bytes: int = 1 << 20,
    ) -> RangeReader:
        """A Query page read in steps (see RangeReader): the node reads a small page inline."""
        lo, hi = sk_range(pk_value, sk_condition)
        return RangeReader(self._db, lo, hi, forward, limit, start_position, filter, projection, max_bytes)

    def scan(self, start: bytes = b"", end: bytes | None = None, **options: Any) -> QueryPage:
        """One whole Scan page; `options` as scan_reader's."""
        return self.scan_reader(start, end, **options).finish()

    def scan_reader(
        self,
        start: bytes = b"",
        end: bytes | None = None,
        *,
        forward: bool = True,
        limit: int | None = None,
        start_position: bytes | None = None,
        filter: Any = None,
        projection: Callable[[Item], Item] | None = None,
        max_bytes: int = 1 << 20,
    ) -> RangeReader:
        return RangeReader(self._db, start or b"", end, forward, limit, start_position, filter, projection, max_bytes)

    # ------------------------------------------------------------ snapshots
    def checkpoint(self, dest_dir: str | os.PathLike) -> SnapshotInfo:
        """A RocksDB checkpoint (hard links) whose meta keys carry its applied index."""
        dest = Path(dest_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:  # no apply in between: the index we report is the one inside
            Checkpoint(self._db).create_checkpoint(str(dest))
            return SnapshotInfo(self._applied, dest)

    def restrict(self, start: bytes, end: bytes | None) -> None:
        """Keep only the positions in [start, end): a split child drops its sibling's half.

        Every replica of a child runs this on the same parent state, so children stay
        identical; the counters are recomputed from what remains.
        """
        with self._lock:
            batch = WriteBatch(raw_mode=True)
            if start:
                batch.delete_range(DATA, DATA + start)
            if end is not None:
                batch.delete_range(DATA + end, DATA_END)
            self._db.write(batch)
            count = nbytes = 0
            it = self._db.iter()
            it.seek(DATA + start)
            while it.valid():
                key = it.key()
                if key >= DATA_END or (end is not None and key >= DATA + end):
                    break
                count += 1
                nbytes += len(key) + len(it.value())
                it.next()
            del it
            wb = WriteBatch(raw_mode=True)
            wb.put(META + b"item_count", _pack(count))
            wb.put(META + b"data_bytes", _pack(nbytes))
            self._db.write(wb)
            self._count, self._bytes = count, nbytes

    # ------------------------------------------------------------ scrub
    def digest(self, start: bytes = b"", end: bytes | None = None) -> tuple[int, str, int]:
        """(applied index, hash hex, item count) of [start, end), all at one applied index."""
        with self._lock:
            it = self._db.iter()  # an iterator is a consistent view as of its creation
            index = self._applied
        return (index, *_digest_of(it, start, end))

    def _pin_scrub(self, index: int, start: bytes, end: bytes | None) -> None:
        view = (self._db.iter(), start, end)
        with self._scrub_lock:
            self._scrub_views[index] = view
            for old in sorted(self._scrub_views)[:-KEEP_SCRUBS]:
                del self._scrub_views[old]

    def scrub_result(self, index: int) -> tuple[int, str, int] | None:
        """The digest recorded by the scrub entry at index (computed on first ask, then kept in meta)."""
        key = SCRUB_PREFIX + index.to_bytes(8, "big")
        with self._scrub_lock:
            raw = self._db.get(key)
            if raw is not None:
                return tuple(_unpack(raw))  # type: ignore[return-value]
            view = self._scrub_views.get(index)
            if view is None:
                return None  # never applied here, or the view was lost in a restart
            it, start, end = view
            digest, count = _digest_of(it, start, end)
            result = (index, digest, count)
            self._db.put(key, _pack(list(result)))
            del self._scrub_views[index]
            self._trim_scrubs()
            return result

    def latest_scrub(self) -> tuple[int, str, int] | None:
        """The most recent scrub digest this replica recorded."""
        with self._scrub_lock:
            pending = max(self._scrub_views, default=None)
        it = self._db.iter()
        it.seek_for_prev(SCRUB_PREFIX + b"\xff" * 8)
        stored = _unpack(it.value()) if it.valid() and it.key().startswith(SCRUB_PREFIX) else None
        if pending is not None and (stored is None or pending > stored[0]):
            return self.scrub_result(pending)
        return tuple(stored) if stored is not None else None  # type: ignore[return-value]

    def _trim_scrubs(self) -> None:
        keys = list(self._db.keys(from_key=SCRUB_PREFIX))
        keys = [k for k in keys if k.startswith(SCRUB_PREFIX)]
        for k in keys[:-KEEP_SCRUBS]:
            self._db.delete(k)


def _digest_of(it: Any, start: bytes, end: bytes | None) -> tuple[str, int]:
    d = _Digest()
    end_key = DATA + end if end is not None else DATA_END
    it.seek(DATA + start)
    while it.valid():
        key = it.key()
        if key >= end_key:
            break
        d.add(key[len(DATA) :], it.value())
        it.next()
    return d.hexdigest(), d.count


def _side_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".incoming"), path.with_name(path.name + ".old")


def _recover_install(path: Path) -> None:
    """Finish or discard an install interrupted by a crash between its renames."""
    incoming, old = _side_paths(path)
    if not path.exists() and old.exists():
        os.rename(old, path)  # died before the commit rename: the caller never saw the install succeed
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(incoming, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RangeReader:
    """One page of [lo, hi) in either direction, read from one iterator (one consistent view) in steps.

    A step stops after a byte budget, so a node can read the common small page on its
    event loop (an executor hop costs more than reading a few items) and hand only a
    long page's remainder to a thread; both steps walk the same iterator.
    """

    def __init__(
        self,
        db: Rdict,
        lo: bytes,
        hi: bytes | None,
        forward: bool,
        limit: int | None,
        start_position: bytes | None,
        flt: Any,
        projection: Callable[[Item], Item] | None,
        max_bytes: int,
    ) -> None:
        if start_position is not None:
            if forward:
                lo = max(lo, start_position + b"\x00")  # exclusive start
            else:
                hi = start_position if hi is None else min(hi, start_position)
        self._lo, self._hi = DATA + lo, DATA + hi if hi is not None else DATA_END
        self._forward, self._limit, self._filter, self._projection = forward, limit, flt, projection
        self._max_bytes = max_bytes
        self.page = QueryPage([], 0, 0, None, 0)
        self.done = self._lo >= self._hi or (limit is not None and limit <= 0)
        self._it: Any = None
        if not self.done:
            it = self._it = db.iter()
            if forward:
                it.seek(self._lo)
            else:
                it.seek_for_prev(self._hi)
                if it.valid() and it.key() >= self._hi:
                    it.prev()

    def step(self, budget_bytes: int | None = None) -> bool:
        """Read on until the page is complete (True) or `budget_bytes` more were read (False)."""
        if self.done:
            return True
        it, page, lo, hi = self._it, self.page, self._lo, self._hi
        flt, projection, limit, forward = self._filter, self._projection, self._limit, self._forward
        stop_at = None if budget_bytes is None else page.bytes_read + budget_bytes
        while it.valid():
            key = it.key()
            if not (lo <= key < hi):
                break
            item = _unpack(it.value())
            page.scanned_count += 1
            page.bytes_read += _item_size(item)
            if _matches(flt, item):
                page.items.append(projection(item) if projection is not None else item)
                page.count += 1
            if (limit is not None and page.scanned_count >= limit) or page.bytes_read >= self._max_bytes:
                page.last_position = key[len(DATA) :]
                break
            if forward:
                it.next()
            else:
                it.prev()
            if stop_at is not None and page.bytes_read >= stop_at:
                return False
        self.done, self._it = True, None
        return True

    def finish(self) -> QueryPage:
        self.step()
        return self.page
