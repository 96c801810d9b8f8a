"""Checksummed, segmented write-ahead log for one Paxos acceptor.

Layout: a directory of append-only segments ``wal-<first record seq, 20 digits>.log``.
Each record is framed (little endian)::

    u32 body length | u32 crc32c(body) | body
    body = u8 type | u64 ballot round | u16 node-id length | node id | u64 index | payload

ENTRY records carry ``u8 EntryKind + data``; HARD_STATE carries the promised ballot in the
ballot fields and the commit point in ``index``; SNAPSHOT is a marker (SnapshotMeta, payload =
encoded Config) meaning everything <= index is covered by a state snapshot.

Durability rule that keeps recovery simple: a segment is only rolled over once it is fully
fsynced, so every non-last segment is complete on disk and any bad record in one is real
corruption. Only the last segment can have a torn tail (the unsynced writes of a crash).

Preallocation (``preallocate`` bytes): the live segment keeps a zero-filled, already synced
stretch ahead of its last record, and records are written into it in place. An fdatasync of
a record that only overwrites allocated blocks flushes data alone; one that grows the file
must also commit the new size and blocks through the filesystem journal, which here costs
about half again the CPU and twice the wait. A zero length field is never a valid record,
so recovery reads zeros after the last record as the log's end, not as a torn tail. The next
stretch is zero-filled inside sync(), outside the lock appends take: only an append that would
reach the stretch being filled waits for it.

A sync that is only an fdatasync (no roll, no fill, no directory) can be handed out:
begin_sync() names the descriptor and the size it covers, the caller runs the fdatasync its
own way (the replicas use the kernel's AIO from the event loop, aio_sync.py) and reports back
with end_sync(). A segment retired meanwhile stays open until the last sync using it ends.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import crc32c
from kynamo.storage_node.paxos_types import Config, Entry, EntryKind, HardState, SnapshotMeta

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # body length, crc32c(body)
_BODY_HEAD = struct.Struct("<BQH")  # type, ballot round, node-id length
_INDEX = struct.Struct("<Q")
_INDEX_KIND = struct.Struct("<QB")
_MIN_BODY = _BODY_HEAD.size + _INDEX.size
_MAX_BODY = 1 << 30  # a larger length field is garbage, not a record
_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
_KINDS = frozenset(int(k) for k in EntryKind)
_fdatasync = getattr(os, "fdatasync", os.fsync)


class RecordType(IntEnum):
    ENTRY = 1
    HARD_STATE = 2
    SNAPSHOT = 3


# Candidate frame starts when hunting for valid data after a bad record: the type byte sits
# 8 bytes into a frame, so only offsets whose type byte is plausible get a CRC check.
_TYPE_BYTE_RE = re.compile(rb"[\x01\x02\x03]")


class WalCorruptionError(Exception):
    """A checksum or framing failure that is not a torn tail: the log must be repaired from a peer."""

    def __init__(self, segment: Path, offset: int, reason: str = "bad record") -> None:
        super().__init__(f"WAL corruption in {segment} at offset {offset}: {reason}")
        self.segment = segment
        self.offset = offset


@dataclass
class Recovered:
    hard_state: HardState
    entries: list[Entry]
    snapshot: SnapshotMeta | None
    truncated_bytes: int = 0


@dataclass
class _Segment:
    path: Path
    first_seq: int
    records: int = 0
    max_index: int = -1  # highest ENTRY index held; -1 when none


@dataclass
class _Scan:
    """Mutable state of a recovery scan across segments."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    entries: dict[int, Entry] = field(default_factory=dict)


def _segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


def _frame(rtype: int, round_: int, node: str, index: int, payload: bytes) -> bytes:
    nb = node.encode()
    body = b"".join((_BODY_HEAD.pack(rtype, round_, len(nb)), nb, _INDEX.pack(index), payload))
    return _HEADER.pack(len(body), crc32c.crc32c(body)) + body


def _entry_frame(e: Entry) -> bytes:
    nb = e.ballot[1].encode()
    body = b"".join(
        (_BODY_HEAD.pack(RecordType.ENTRY, e.ballot[0], len(nb)), nb, _INDEX_KIND.pack(e.index, e.kind), e.data)
    )
    return _HEADER.pack(len(body), crc32c.crc32c(body)) + body


def _hard_state_frame(hs: HardState) -> bytes:
    return _frame(RecordType.HARD_STATE, hs.promised[0], hs.promised[1], hs.commit, b"")


def _snapshot_frame(meta: SnapshotMeta) -> bytes:
    return _frame(RecordType.SNAPSHOT, meta.ballot[0], meta.ballot[1], meta.index, meta.config.encode())


def _valid_frame_at(data: bytes, pos: int) -> int:
    """Return the frame's total size if a CRC-valid frame starts at pos, else 0."""
    end = len(data)
    if pos + _HEADER.size + _MIN_BODY > end:
        return 0
    length, crc = _HEADER.unpack_from(data, pos)
    if length < _MIN_BODY or length > _MAX_BODY or pos + _HEADER.size + length > end:
        return 0
    start = pos + _HEADER.size
    if data[start] not in (1, 2, 3):
        return 0
    nlen = struct.unpack_from("<H", data, start + 9)[0]
    if _MIN_BODY + nlen > length:
        return 0
    if crc32c.crc32c(memoryview(data)[start : start + length]) != crc:
        return 0
    return _HEADER.size + length


def _valid_frame_after(data: bytes, pos: int) -> bool:
    """Whether any CRC-valid frame starts after pos: tells mid-log corruption from a torn tail."""
    for m in _TYPE_BYTE_RE.finditer(data, pos + 1 + _HEADER.size):
        if _valid_frame_at(data, m.start() - _HEADER.size):
            return True
    return False


def _apply_record(scan: _Scan, seg: _Segment, body: memoryview, where: tuple[Path, int]) -> None:
    rtype, round_, nlen = _BODY_HEAD.unpack_from(body, 0)
    p = _BODY_HEAD.size
    try:
        node = bytes(body[p : p + nlen]).decode()
    except UnicodeDecodeError as exc:
        raise WalCorruptionError(*where, "node id is not utf-8") from exc
    p += nlen
    (index,) = _INDEX.unpack_from(body, p)
    payload = body[p + _INDEX.size :]
    ballot = (round_, node)
    if rtype == RecordType.ENTRY:
        if not payload or payload[0] not in _KINDS:
            raise WalCorruptionError(*where, "entry without a valid kind")
        scan.entries[index] = Entry(index, ballot, EntryKind(payload[0]), bytes(payload[1:]))
        seg.max_index = max(seg.max_index, index)
    elif rtype == RecordType.HARD_STATE:
        scan.hard_state = HardState(ballot, index)
    elif rtype == RecordType.SNAPSHOT:
        try:
            config = Config.decode(bytes(payload))
        except (ValueError, UnicodeDecodeError) as exc:
            raise WalCorruptionError(*where, "undecodable snapshot config") from exc
        scan.snapshot = SnapshotMeta(index, ballot, config)
    else:
        raise WalCorruptionError(*where, f"unknown record type {rtype}")


def _scan_segment(scan: _Scan, seg: _Segment, data: bytes, last: bool) -> tuple[int, bool]:
    """Apply every record of one segment: (where its records end, whether a torn tail follows)."""
    view = memoryview(data)
    pos, end = 0, len(data)
    content_end: int | None = None
    while pos < end:
        size = _valid_frame_at(data, pos)
        if not size:
            if content_end is None:
                content_end = len(data.rstrip(b"\0"))
            if pos >= content_end:
                return pos, False  # only preallocated zeros follow: the log ends here
            if last and not _valid_frame_after(data, pos):
                return pos, True
            raise WalCorruptionError(seg.path, pos, "checksum or framing failure")
        _apply_record(scan, seg, view[pos + _HEADER.size : pos + size], (seg.path, pos))
        seg.records += 1
        pos += size
    return pos, False


def _list_segments(directory: Path) -> list[_Segment]:
    segs = []
    for p in directory.iterdir():
        m = _SEGMENT_RE.match(p.name)
        if m and p.is_file():
            segs.append(_Segment(p, int(m.group(1))))
    segs.sort(key=lambda s: s.first_seq)
    return segs


_ZEROS: dict[int, bytes] = {}


def _zeros(n: int) -> bytes:
    buf = _ZEROS.get(n)
    if buf is None:
        buf = _ZEROS[n] = bytes(n)
    return buf


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wipe(directory: Path) -> None:
    """Delete every segment (repair from a peer starts from an empty log). Blocking."""
    directory = Path(directory)
    if not directory.exists():
        return
    for seg in _list_segments(directory):
        seg.path.unlink(missing_ok=True)
    _fsync_dir(directory)


@dataclass(frozen=True, slots=True)
class SyncTicket:
    """One fdatasync handed out by begin_sync(): the fd and the size it makes durable."""

    fd: int
    target: int


class WriteAheadLog:
    """Append-only log of entries, hard states and snapshot markers.

    append() runs on the event loop (one os.write, no fsync); sync() and compact() block and
    belong in an executor. A lock makes those safe to run from another thread meanwhile.
    """

    def __init__(self, directory: Path, segments: list[_Segment], scan: _Scan, *, segment_bytes: int,
                 retention_entries: int, live_end: int | None = None, preallocate: int = 0) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.preallocate = preallocate
        self.retention_entries = retention_entries
        self.bytes_written = 0
        self.fsyncs = 0
        self._segments = segments
        self._hard_state = HardState(scan.hard_state.promised, scan.hard_state.commit)
        self._snapshot = scan.snapshot
        self._lock = threading.Lock()  # guards fd/size/segment list against executor threads
        self._sync_lock = threading.Lock()  # one fsync at a time; the fd is never closed under it
        # A zero-fill runs outside _lock (a 1 MB write would stall the loop's appends): while it
        # runs, _filling is where it starts, and an append reaching that far waits for it.
        self._filling: int | None = None
        self._filled = threading.Condition(self._lock)
        self._truncations = 0
        live = segments[-1]
        self._fd = os.open(live.path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._zeroed = os.fstat(self._fd).st_size  # the file's length: records, then any preallocated zeros
        self._size = self._zeroed if live_end is None else live_end  # where the next record goes
        # What recovery read may sit only in the page cache (a process crash, not a power loss):
        # treat it as unsynced so the live segment is fsynced before it may ever roll.
        self._synced = 0
        self._syncing = 0  # fdatasyncs using the live fd (a roll retires it, not closes it, meanwhile)
        self._retired: list[int] = []  # fds of rolled segments still held by an in-flight fsync
        self._dir_dirty = False
        self._closed = False

    # ------------------------------------------------------------ open / recovery
    @classmethod
    def open(cls, directory: Path, *, segment_bytes: int = 64 << 20, retention_entries: int = 10_000,
             preallocate: int = 0) -> tuple[WriteAheadLog, Recovered]:
        """Recover the log in `directory` (created if missing) and open it for appending.

        `preallocate`: bytes of zeros kept synced ahead of the live segment's last record (0: none).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        segments = _list_segments(directory)
        scan = _Scan()
        truncated = 0
        live_end: int | None = None
        for i, seg in enumerate(segments):
            data = seg.path.read_bytes()
            last = i == len(segments) - 1
            live_end, torn = _scan_segment(scan, seg, data, last)
            if torn:
                cut = live_end
                truncated = len(data) - cut
                log.warning("WAL %s: torn tail of %d bytes at offset %d removed", seg.path, truncated, cut)
                with open(seg.path, "r+b") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
        if not segments:
            segments = [_Segment(directory / _segment_name(0), 0)]
            segments[0].path.touch()
            _fsync_dir(directory)
        floor = scan.snapshot.index if scan.snapshot else 0
        entries = sorted((e for e in scan.entries.values() if e.index > floor), key=lambda e: e.index)
        wal = cls(directory, segments, scan, segment_bytes=segment_bytes, retention_entries=retention_entries,
                  live_end=live_end, preallocate=preallocate)
        return wal, Recovered(scan.hard_state, entries, scan.snapshot, truncated)

    # ------------------------------------------------------------ writing
    def append(self, hard_state: HardState | None, entries: Sequence[Entry]) -> int:
        """Write records to the OS (not durable until sync()); returns bytes written."""
        parts = [_entry_frame(e) for e in entries]
        if hard_state is not None:
            parts.append(_hard_state_frame(hard_state))
        if not parts:
            return 0
        data = b"".join(parts)
        with self._lock:
            self._write_locked(data, len(parts))
            live = self._segments[-1]
            for e in entries:
                if e.index > live.max_index:
                    live.max_index = e.index
            if hard_state is not None:
                self._hard_state = HardState(hard_state.promised, hard_state.commit)
        return len(data)

    def _write_locked(self, data: bytes, records: int) -> None:
        if self._closed:
            raise ValueError("WAL is closed")
        self._maybe_roll_locked()
        while self._filling is not None and self._size + len(data) > self._filling:
            self._filled.wait()  # rare: the records would reach the stretch being zero-filled
            if self._closed:
                raise ValueError("WAL is closed")
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.pwrite(self._fd, view[done:], self._size + done)
        except BaseException:
            # Leave no partial record behind: later appends would turn it into mid-log corruption.
            os.ftruncate(self._fd, self._size)
            self._zeroed = self._size
            self._truncations += 1
            raise
        self._size += len(data)
        self._zeroed = max(self._zeroed, self._size)
        self.bytes_written += len(data)
        self._segments[-1].records += records

    def _maybe_roll_locked(self) -> None:
        # Roll only once the live segment is fully durable, so a crash can never leave a hole
        # in a non-last segment. Until then the segment overruns.
        if self._size < self.segment_bytes or self._synced < self._size or self._filling is not None:
            return
        live = self._segments[-1]
        seg = _Segment(self.directory / _segment_name(live.first_seq + live.records), live.first_seq + live.records)
        fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if self._zeroed > self._size:
            os.ftruncate(self._fd, self._size)  # a finished segment keeps no unused zeros
        if self._syncing:
            self._retired.append(self._fd)  # an fsync may still be using it; sync() closes it
        else:
            os.close(self._fd)
        self._fd, self._size, self._synced, self._zeroed = fd, 0, 0, 0
        self._segments.append(seg)
        self._dir_dirty = True

    def sync(self) -> float:
        """fdatasync the live segment (and the directory after a roll); returns seconds taken.

        Blocking. Covers every append() that returned before it was called.
        """
        t0 = time.perf_counter()
        with self._sync_lock:
            with self._lock:
                if self._closed:
                    raise ValueError("WAL is closed")
                if self._size >= self.segment_bytes:
                    # Appends outpacing syncs would otherwise never see the segment fully synced
                    # and never roll: once per segment, fsync under the lock (stalling appends
                    # for one fsync) so the roll happens with no unsynced data behind it.
                    if self._synced < self._size:
                        _fdatasync(self._fd)
                        self.fsyncs += 1
                        self._synced = self._size
                    self._maybe_roll_locked()
                fill = self._plan_fill_locked()
            if fill is not None:
                self._fill(*fill)
            with self._lock:
                fd, target, dir_dirty = self._fd, self._size, self._dir_dirty
                needed = target > self._synced or dir_dirty or fill is not None
                self._dir_dirty = False
                self._syncing += 1
            try:
                if needed:
                    _fdatasync(fd)
                    if dir_dirty:
                        _fsync_dir(self.directory)
                    self.fsyncs += 1
            except BaseException:
                with self._lock:
                    self._dir_dirty = self._dir_dirty or dir_dirty
                raise
            else:
                with self._lock:
                    if fd == self._fd and target > self._synced:
                        self._synced = target
            finally:
                with self._lock:
                    self._syncing -= 1
                    self._close_retired_locked()
        return time.perf_counter() - t0

    def begin_sync(self) -> SyncTicket | None:
        """The fdatasync that would make every append so far durable, for a caller that runs it
        itself (without blocking: storage-node/aio_sync.py), then calls end_sync().

        None when there is nothing to sync, or when this sync has more to do than one fdatasync
        (a segment to roll, zeros to fill ahead, the directory after a roll): then use sync().
        """
        with self._lock:
            if self._closed:
                raise ValueError("WAL is closed")
            if (self._size >= self.segment_bytes or self._dir_dirty or self._filling is not None
                    or self._fill_due_locked()):
                return None
            if self._size <= self._synced:
                return None
            self._syncing += 1
            return SyncTicket(self._fd, self._size)

    def end_sync(self, ticket: SyncTicket, ok: bool) -> None:
        """Record a begin_sync() fdatasync as done (`ok`) or failed; the fd may be closed now."""
        with self._lock:
            if ok:
                self.fsyncs += 1
                if ticket.fd == self._fd and ticket.target > self._synced:
                    self._synced = ticket.target
            self._syncing -= 1
            self._close_retired_locked()

    def _plan_fill_locked(self) -> tuple[int, int, int, int] | None:
        """The next stretch to zero-fill, once less than half of `preallocate` is left ahead.

        The zeros are synced with the records of the same sync(): that one fdatasync pays the
        journal commit of the file's growth, and the records of the next ones overwrite in place.
        Returns (fd, start, length, truncations) and marks the stretch as being filled.
        """
        if not self._fill_due_locked():
            return None
        start = max(self._zeroed, self._size)
        self._filling = start
        return self._fd, start, self.preallocate, self._truncations

    def _fill_due_locked(self) -> bool:
        """Less than half of `preallocate` is left zeroed ahead of the live segment's records."""
        return (bool(self.preallocate) and self._zeroed - self._size < self.preallocate // 2
                and self._size < self.segment_bytes)

    def _fill(self, fd: int, start: int, want: int, truncations: int) -> None:
        """Write the planned zeros without holding _lock (sync() holds _sync_lock: the fd stays open)."""
        ok = False
        try:
            os.pwrite(fd, _zeros(want), start)
            ok = True
        finally:
            with self._lock:
                self._filling = None
                if ok and fd == self._fd and truncations == self._truncations:
                    self._zeroed = max(self._zeroed, start + want)
                self._filled.notify_all()

    def _close_retired_locked(self, force: bool = False) -> None:
        if self._syncing and not force:
            return  # another fdatasync may still name one of them
        for old in self._retired:
            os.close(old)
        self._retired.clear()

    def record_snapshot(self, meta: SnapshotMeta) -> None:
        """Durably mark that a state snapshot covers everything <= meta.index. Blocking."""
        data = _snapshot_frame(meta)
        with self._lock:
            self._write_locked(data, 1)
            self._snapshot = meta
        self.sync()

    # ------------------------------------------------------------ retention
    def compact(self, upto_index: int) -> int:
        """Delete old segments no longer needed; returns how many. Blocking.

        A segment goes when it is not the live one and all its entries are <= both
        upto_index - retention_entries and the latest snapshot marker. The current hard state
        and snapshot marker are re-appended (and synced) first, so deleting never loses them.
        """
        with self._lock:
            if self._snapshot is None:
                return 0
            limit = min(upto_index - self.retention_entries, self._snapshot.index)
            doomed: list[_Segment] = []
            for seg in self._segments[:-1]:
                if seg.max_index > limit:
                    break  # delete only a prefix: recovery order must stay intact
                doomed.append(seg)
            if not doomed:
                return 0
            data = _snapshot_frame(self._snapshot) + _hard_state_frame(self._hard_state)
            self._write_locked(data, 2)
        self.sync()
        with self._lock:
            for seg in doomed:
                seg.path.unlink(missing_ok=True)
            self._segments = [s for s in self._segments if s not in doomed]
        _fsync_dir(self.directory)
        log.info("WAL %s: compacted %d segments up to index %d", self.directory, len(doomed), limit)
        return len(doomed)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)
                self._close_retired_locked(force=True)
