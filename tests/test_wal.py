"""WAL tests against real files: recovery, torn tails, corruption, compaction."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from kynamo.storage_node.paxos_types import Config, Entry, EntryKind, HardState, SnapshotMeta
from kynamo.storage_node.wal import WalCorruptionError, WriteAheadLog, wipe

CFG = Config(("a", "b", "c"))


def ent(i: int, rnd: int = 1, node: str = "n1", data: bytes | None = None) -> Entry:
    return Entry(i, (rnd, node), EntryKind.COMMAND, data if data is not None else f"cmd-{i}".encode())


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("wal-*.log"))


def test_round_trip(tmp_path: Path) -> None:
    wal, rec = WriteAheadLog.open(tmp_path)
    assert rec.entries == [] and rec.snapshot is None and rec.hard_state == HardState()
    entries = [ent(1), Entry(2, (1, "n1"), EntryKind.NOOP), Entry(3, (1, "n1"), EntryKind.CONFIG, CFG.encode())]
    n = wal.append(HardState((3, "n2"), 2), entries)
    assert n > 0 and wal.bytes_written == n
    wal.sync()
    assert wal.fsyncs == 1
    wal.close()
    wal, rec = WriteAheadLog.open(tmp_path)
    assert rec.entries == entries
    assert rec.hard_state == HardState((3, "n2"), 2)
    assert rec.truncated_bytes == 0
    wal.close()


def test_later_record_replaces_index(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(None, [ent(1), ent(2), ent(3)])
    wal.append(HardState((2, "n2"), 0), [ent(2, 2, "n2", b"new"), ent(1, 2, "n2", b"one")])
    wal.sync()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert [(e.index, e.data) for e in rec.entries] == [(1, b"one"), (2, b"new"), (3, b"cmd-3")]
    assert rec.entries[1].ballot == (2, "n2")


def test_restart_across_segments(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    for i in range(1, 2001):
        wal.append(HardState((1, "n1"), i - 1), [ent(i)])
        if i % 50 == 0:
            wal.sync()
    wal.sync()
    wal.close()
    assert len(segments(tmp_path)) > 10
    wal, rec = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    assert [e.index for e in rec.entries] == list(range(1, 2001))
    assert rec.hard_state.commit == 1999
    # keep appending after restart, in the recovered live segment and beyond
    wal.append(None, [ent(2001)])
    wal.sync()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    assert rec.entries[-1].index == 2001


def test_unsynced_segment_does_not_roll(tmp_path: Path) -> None:
    """A segment only rolls once durable, so non-last segments never have torn tails."""
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=256)
    for i in range(1, 50):
        wal.append(None, [ent(i)])
    assert len(segments(tmp_path)) == 1
    wal.sync()
    wal.append(None, [ent(50)])
    assert len(segments(tmp_path)) == 2
    wal.close()


def test_torn_tail_truncated(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(HardState((1, "n1"), 1), [ent(i) for i in range(1, 11)])
    wal.sync()
    good = os.path.getsize(segments(tmp_path)[-1])
    wal.append(None, [ent(11, data=b"x" * 100)])
    wal.sync()
    wal.close()
    seg = segments(tmp_path)[-1]
    with open(seg, "r+b") as f:  # torn mid-record, then zero-filled garbage
        f.truncate(good + 40)
        f.seek(0, os.SEEK_END)
        f.write(b"\0" * 500)
    wal, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 11))
    assert rec.truncated_bytes == 540
    assert os.path.getsize(seg) == good
    wal.append(None, [ent(11)])
    wal.sync()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert rec.entries[-1].index == 11 and rec.truncated_bytes == 0


def test_torn_length_field(tmp_path: Path) -> None:
    """A length running past the end of the last segment is a torn tail."""
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(None, [ent(1)])
    wal.sync()
    wal.close()
    seg = segments(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write((10_000).to_bytes(4, "little") + b"\x01\x02\x03")
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == [1] and rec.truncated_bytes == 7


def test_flipped_byte_mid_log_raises(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(None, [ent(i) for i in range(1, 101)])
    wal.sync()
    wal.close()
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    seg.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptionError) as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.segment == seg
    assert 0 < err.value.offset <= len(raw) // 2
    assert seg.name in str(err.value)


def test_bad_record_in_non_last_segment_raises(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=512)
    for i in range(1, 200):
        wal.append(None, [ent(i)])
        wal.sync()
    wal.close()
    first = segments(tmp_path)[0]
    raw = bytearray(first.read_bytes())
    raw[-3] ^= 0xFF  # last record of a non-last segment: not a torn tail
    first.write_bytes(bytes(raw))
    with pytest.raises(WalCorruptionError) as err:
        WriteAheadLog.open(tmp_path, segment_bytes=512)
    assert err.value.segment == first


def test_compaction(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=2048, retention_entries=100)
    for i in range(1, 1001):
        wal.append(HardState((4, "n3"), i), [ent(i, 4, "n3")])
        if i % 10 == 0:
            wal.sync()
    wal.sync()
    assert wal.compact(1000) == 0  # no snapshot marker yet: nothing is covered
    meta = SnapshotMeta(800, (4, "n3"), CFG)
    wal.record_snapshot(meta)
    before = len(segments(tmp_path))
    deleted = wal.compact(1000)
    assert deleted > 0
    assert len(segments(tmp_path)) == before - deleted
    assert wal.compact(1000) == 0
    wal.append(None, [ent(1001, 4, "n3")])
    wal.sync()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=2048)
    assert rec.snapshot == meta
    assert rec.hard_state == HardState((4, "n3"), 1000)
    assert [e.index for e in rec.entries] == list(range(801, 1002))


def test_wipe(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(HardState((1, "x"), 0), [ent(1)])
    wal.sync()
    wal.close()
    wipe(tmp_path)
    assert segments(tmp_path) == []
    wal, rec = WriteAheadLog.open(tmp_path)
    assert rec.entries == [] and rec.hard_state == HardState()
    wal.close()
    wipe(tmp_path / "missing")


def test_performance_smoke(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=8 << 20)
    n, batch = 100_000, 100
    t0 = time.perf_counter()
    for start in range(1, n + 1, batch):
        wal.append(HardState((1, "n1"), start), [ent(i, data=b"v" * 64) for i in range(start, start + batch)])
        if start % 10_000 == 1:
            wal.sync()
    wal.sync()
    t1 = time.perf_counter()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=8 << 20)
    t2 = time.perf_counter()
    assert len(rec.entries) == n
    print(f"\nWAL append {n / (t1 - t0):,.0f} entries/s; recovery {n / (t2 - t1):,.0f} entries/s")


def test_compaction_keeps_old_hard_state(tmp_path: Path) -> None:
    """The only HARD_STATE record lives in a deleted segment: compaction must carry it forward."""
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024, retention_entries=0)
    wal.append(HardState((9, "n2"), 3), [ent(1, 9, "n2")])
    wal.sync()
    for i in range(2, 300):
        wal.append(None, [ent(i, 9, "n2")])
        wal.sync()
    wal.record_snapshot(SnapshotMeta(250, (9, "n2"), CFG))
    first = segments(tmp_path)[0]
    assert wal.compact(250) > 0
    assert not first.exists()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=1024)
    assert rec.hard_state == HardState((9, "n2"), 3)
    assert rec.snapshot is not None and rec.snapshot.index == 250
    assert [e.index for e in rec.entries] == list(range(251, 300))


def test_sync_from_another_thread(tmp_path: Path) -> None:
    """append() on one thread while sync() runs in an executor thread, with segment rolls."""
    import threading

    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    stop = threading.Event()

    def syncer() -> None:
        while not stop.is_set():
            wal.sync()

    t = threading.Thread(target=syncer)
    t.start()
    for i in range(1, 5001):
        wal.append(None, [ent(i)])
    stop.set()
    t.join()
    wal.sync()
    wal.close()
    assert len(segments(tmp_path)) > 1
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    assert [e.index for e in rec.entries] == list(range(1, 5001))


# ---------------------------------------------------------------- preallocation


def test_preallocated_segment_keeps_zeros_ahead_and_recovers_across_reopens(tmp_path: Path) -> None:
    """Records go into a zero-filled stretch; recovery reads the zeros as the log's end, not as a
    torn tail, and appends after a reopen land right after the last record."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate=64 << 10)
    wal.append(HardState((1, "n1"), 3), [ent(i) for i in range(1, 4)])
    wal.sync()
    seg = segments(tmp_path)[-1]
    written = wal.bytes_written
    assert os.path.getsize(seg) >= written + (32 << 10)  # zeros ahead of the records
    assert seg.read_bytes()[written:] == bytes(os.path.getsize(seg) - written)
    wal.close()
    for _ in range(2):  # twice: the second reopen reads records written after zeros were there
        wal, rec = WriteAheadLog.open(tmp_path, preallocate=64 << 10)
        assert rec.truncated_bytes == 0
        last = rec.entries[-1].index
        wal.append(HardState((1, "n1"), last + 2), [ent(last + 1), ent(last + 2)])
        wal.sync()
        wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 8))
    assert rec.hard_state == HardState((1, "n1"), 7)


def test_preallocation_grows_the_file_in_steps(tmp_path: Path) -> None:
    """Most syncs overwrite allocated zeros; the file grows only once per half a stretch."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate=64 << 10)
    seg = segments(tmp_path)[-1]
    sizes = set()
    for i in range(1, 201):
        wal.append(None, [ent(i, data=b"x" * 1000)])
        wal.sync()
        sizes.add(os.path.getsize(seg))
    wal.close()
    assert wal.bytes_written > 200_000
    assert len(sizes) <= wal.bytes_written // (32 << 10) + 2  # without preallocation: 200 sizes
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 201))


def test_torn_tail_inside_preallocated_zeros(tmp_path: Path) -> None:
    """A record torn by a crash, with zeros after it: cut at the torn record, later appends recover."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate=64 << 10)
    wal.append(None, [ent(i) for i in range(1, 11)])
    wal.sync()
    good = wal.bytes_written
    wal.close()
    seg = segments(tmp_path)[-1]
    frame = bytearray(seg.read_bytes()[:good])[-30:]  # the last record's bytes, written again half-way
    with open(seg, "r+b") as f:
        f.seek(good)
        f.write(bytes(frame[:20]))
    wal, rec = WriteAheadLog.open(tmp_path, preallocate=64 << 10)
    assert [e.index for e in rec.entries] == list(range(1, 11)) and rec.truncated_bytes > 0
    wal.append(None, [ent(11)])
    wal.sync()
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 12))


def test_preallocated_segments_roll_without_their_zeros(tmp_path: Path) -> None:
    """A finished segment is cut back to its records, so only the live one holds zeros."""
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=8 << 10, preallocate=16 << 10)
    for i in range(1, 121):
        wal.append(None, [ent(i, data=b"y" * 300)])
        wal.sync()
    wal.close()
    segs = segments(tmp_path)
    assert len(segs) > 3
    for seg in segs[:-1]:
        assert not seg.read_bytes().endswith(b"\0" * 64)
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 121))


def _sync_while_filling(wal: WriteAheadLog) -> tuple[threading.Thread, bool]:
    """Start wal.sync() in a thread and wait until its zero-fill is under way (False: it finished first)."""
    t = threading.Thread(target=wal.sync)
    t.start()
    while wal._filling is None and t.is_alive():
        pass
    return t, wal._filling is not None


def test_append_does_not_wait_for_the_zero_fill(tmp_path: Path) -> None:
    """The zero-fill (a large write) runs outside the lock appends take: the event loop's
    appends of a commit point must not stall behind it. A big stretch makes the fill slow
    enough to append during it; the attempt is repeated if a fill finishes first."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate=128 << 20)
    caught = False
    index = 0
    for _ in range(5):
        index += 1
        wal.append(None, [ent(index)])
        wal._zeroed = wal._size + 4096  # as if most of the stretch ahead were used: the next sync fills
        t, filling = _sync_while_filling(wal)
        if filling:
            start = wal._filling
            index += 1
            wal.append(HardState((1, "n1"), index - 1), [ent(index)])
            # Returned while the fill was still writing: the file has not reached its end yet.
            caught = caught or segments(tmp_path)[-1].stat().st_size < start + (128 << 20)
        t.join()
        if caught:
            break
    assert caught, "no append landed during a 128 MB zero-fill in 5 tries"
    wal.sync()
    wal.close()
    wal, rec = WriteAheadLog.open(tmp_path, preallocate=128 << 20)
    assert [e.index for e in rec.entries] == list(range(1, index + 1))
    wal.close()


def test_append_reaching_the_stretch_being_filled_waits_for_it(tmp_path: Path) -> None:
    """Records that would reach the stretch being zero-filled wait for the fill, so its zeros
    never land on them; all of them recover."""
    wal, _ = WriteAheadLog.open(tmp_path, preallocate=64 << 20)
    payload = os.urandom(1 << 20)
    index = 0
    for _ in range(5):
        index += 1
        wal.append(None, [ent(index)])
        wal._zeroed = wal._size + 1024  # 1 KB of zeros left ahead: the next fill starts there
        t, filling = _sync_while_filling(wal)
        if filling:
            index += 1
            wal.append(None, [ent(index, data=payload)])  # 1 MB: past the fill's start
            assert wal._filling is None  # it waited for the fill to finish
        t.join()
        if filling:
            break
    else:
        pytest.fail("no append landed during a 64 MB zero-fill in 5 tries")
    wal.sync()
    wal.close()
    wal, rec = WriteAheadLog.open(tmp_path, preallocate=64 << 20)
    assert [e.index for e in rec.entries] == list(range(1, index + 1))
    assert rec.entries[-1].data == payload
    assert rec.truncated_bytes == 0
    wal.close()
