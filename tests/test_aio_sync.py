"""Linux native AIO fdatasync (storage-node/aio_sync.py) against the real kernel and real files."""

from __future__ import annotations

import asyncio
import errno
import os
import platform
import threading
from pathlib import Path

import pytest
from kynamo.storage_node.aio_sync import AioSync
from kynamo.storage_node.paxos_types import Entry, EntryKind, HardState
from kynamo.storage_node.wal import WriteAheadLog

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"),
                                reason="native AIO is Linux on x86_64/aarch64 only; elsewhere WAL syncs use a thread")


def test_fdatasync_completes_on_the_loop_without_a_thread(tmp_path: Path) -> None:
    async def main() -> None:
        aio = AioSync.open(tmp_path)
        assert aio is not None, "this machine's kernel offers AIO fdatasync: the probe must pass"
        threads = threading.active_count()
        path = tmp_path / "data"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for i in range(50):
                os.pwrite(fd, b"x" * 4096, i * 4096)
                await aio.fdatasync(fd)
            # many at once, on one context, all complete
            await asyncio.gather(*(aio.fdatasync(fd) for _ in range(40)))
        finally:
            os.close(fd)
            aio.close()
        assert threading.active_count() == threads  # no thread was started for any of them
        assert path.stat().st_size == 50 * 4096

    asyncio.run(main())


def test_errors_are_oserrors_with_the_kernels_errno(tmp_path: Path) -> None:
    async def main() -> None:
        aio = AioSync.open(tmp_path)
        assert aio is not None
        r, w = os.pipe()
        try:
            with pytest.raises(OSError) as bad:
                await aio.fdatasync(987654)  # not an open descriptor
            assert bad.value.errno == errno.EBADF
            with pytest.raises(OSError) as pipe:
                await aio.fdatasync(r)  # a pipe cannot be synced
            assert pipe.value.errno == errno.EINVAL
            fd = os.open(tmp_path / "ok", os.O_RDWR | os.O_CREAT, 0o644)
            await aio.fdatasync(fd)  # the context still works after refusals
            os.close(fd)
        finally:
            os.close(r)
            os.close(w)
            aio.close()
        with pytest.raises(ValueError):
            await aio.fdatasync(r)

    asyncio.run(main())


def test_wal_hands_out_its_plain_syncs_and_keeps_the_rest(tmp_path: Path) -> None:
    """begin_sync() gives the one fdatasync a plain sync is; fills and rolls stay in sync()."""

    async def main() -> None:
        aio = AioSync.open(tmp_path)
        assert aio is not None
        wal, _ = WriteAheadLog.open(tmp_path / "wal", preallocate=64 << 10)
        try:
            assert wal.begin_sync() is None  # nothing written yet
            wal.append(HardState((1, "n1"), 0), [Entry(1, (1, "n1"), EntryKind.COMMAND, b"a")])
            assert wal.begin_sync() is None  # no zeros ahead yet: sync() must fill first
            wal.sync()
            for i in range(2, 40):
                wal.append(None, [Entry(i, (1, "n1"), EntryKind.COMMAND, b"b" * 200)])
                ticket = wal.begin_sync()
                assert ticket is not None
                await aio.fdatasync(ticket.fd)
                wal.end_sync(ticket, True)
                assert wal.begin_sync() is None  # everything written is durable now
        finally:
            wal.close()
            aio.close()
        _, rec = WriteAheadLog.open(tmp_path / "wal", preallocate=64 << 10)
        assert [e.index for e in rec.entries] == list(range(1, 40))

    asyncio.run(main())


def test_wal_keeps_a_retired_segment_open_while_a_handed_out_sync_runs(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    wal.append(None, [Entry(1, (1, "n1"), EntryKind.COMMAND, b"a" * 100)])
    ticket = wal.begin_sync()
    assert ticket is not None
    wal.append(None, [Entry(2, (1, "n1"), EntryKind.COMMAND, b"b" * 5000)])  # past the segment's size
    wal.sync()  # syncs what is written and rolls: the old descriptor is retired
    assert len(list(tmp_path.glob("wal-*.log"))) == 2
    os.fdatasync(ticket.fd)  # still open: the handed-out sync may still be using it
    wal.end_sync(ticket, True)
    with pytest.raises(OSError):
        os.fstat(ticket.fd)  # closed once the last sync using it ended
    wal.close()


def test_a_full_context_refuses_and_the_wal_sync_falls_back_to_a_thread(tmp_path: Path) -> None:
    """More syncs at once than the context holds (a process hosting many groups): the extra ones
    raise BlockingIOError, and sync_wal() then syncs in a thread; every WAL ends durable."""
    from concurrent.futures import ThreadPoolExecutor

    from kynamo.storage_node.replica import sync_wal

    class Counting(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.submitted += 1
            return super().submit(*args, **kwargs)

    async def main() -> None:
        aio = AioSync.open(tmp_path, capacity=2)  # the kernel rounds it up to a ring page (~126 here)
        assert aio is not None
        fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o644) for i in range(8)] * 80
        try:
            results = await asyncio.gather(*(aio.fdatasync(fd) for fd in fds), return_exceptions=True)
        finally:
            for fd in set(fds):
                os.close(fd)
        refused = [r for r in results if isinstance(r, BlockingIOError)]
        assert refused and all(r is None or isinstance(r, BlockingIOError) for r in results)

        wals = []
        for i in range(300):
            wal, _ = WriteAheadLog.open(tmp_path / f"wal{i}")
            wal.append(None, [Entry(1, (1, "n1"), EntryKind.COMMAND, b"x")])
            wal.sync()  # the first sync of a segment is a thread's (it fills zeros ahead)
            wal.append(HardState((1, "n1"), 1), [Entry(2, (1, "n1"), EntryKind.COMMAND, b"y")])
            wals.append(wal)
        with Counting(4) as pool:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(sync_wal(w, aio, loop, pool) for w in wals))
        assert 0 < pool.submitted < len(wals)  # some went through AIO, the refused ones to a thread
        for wal in wals:
            assert wal.begin_sync() is None  # nothing written is left unsynced
            wal.close()
        aio.close()

    asyncio.run(main())
    for i in range(300):
        _, rec = WriteAheadLog.open(tmp_path / f"wal{i}")
        assert [e.index for e in rec.entries] == [1, 2]
