"""fdatasync without a thread: Linux native AIO (`IOCB_CMD_FDSYNC`), completed through an eventfd.

Why: a WAL sync handed to a thread pool waits for that thread to win the GIL from a busy event
loop before it can even start (measured here at 0.3-0.4 ms per group commit, longer than the
fdatasync itself), and pays futex and self-pipe wake-ups on the way back. Since Linux 4.18 the
kernel runs an AIO fsync on its own workqueue: the loop submits it with one syscall, and the
eventfd wakes the loop when it is done. No Python thread is involved.

Where the kernel or architecture does not offer it (`AioSync.open()` returns None), callers keep
using a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import logging
import os
import platform
import struct
import tempfile
from pathlib import Path

log = logging.getLogger("kynamo.storage.aio")

# (io_setup, io_destroy, io_getevents, io_submit) by machine; others use the thread fallback.
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
_IOCB = struct.Struct("=QIIHhIQQqQII")  # struct iocb (64 bytes, little-endian field order)
_EVENT = struct.Struct("=QQqq")  # struct io_event
_MAX_EVENTS = 64


def _submit(libc: ctypes.CDLL, submit: int, ctx: ctypes.c_ulong, ident: int, fd: int, flags: int, resfd: int) -> None:
    """Submit one fdatasync of `fd` tagged `ident`; OSError (BlockingIOError when the context is full)
    if the kernel refuses it."""
    iocb = ctypes.create_string_buffer(
        _IOCB.pack(ident, 0, 0, _IOCB_CMD_FDSYNC, 0, fd, 0, 0, 0, 0, flags, resfd), _IOCB.size)
    ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))  # io_submit copies the iocb itself
    while libc.syscall(submit, ctx, 1, ptrs) != 1:
        err = ctypes.get_errno() or errno.EIO
        if err != errno.EINTR:
            raise OSError(err, f"io_submit(fdatasync): {os.strerror(err)}")


def _probe(libc: ctypes.CDLL, numbers: tuple[int, int, int, int], ctx: ctypes.c_ulong, fd: int) -> None:
    """One AIO fdatasync of `fd`, waited for (up to 5 s); OSError if the kernel refuses or fails it."""
    _submit(libc, numbers[3], ctx, 1, fd, 0, 0)
    event = ctypes.create_string_buffer(_EVENT.size)
    timeout = ctypes.create_string_buffer(struct.pack("=qq", 5, 0))
    if libc.syscall(numbers[2], ctx, 1, 1, event, timeout) != 1:
        raise OSError(errno.ETIMEDOUT, "AIO fdatasync did not complete")
    res = _EVENT.unpack(event.raw)[2]
    if res < 0:
        raise OSError(-res, f"AIO fdatasync: {os.strerror(-res)}")


class AioSync:
    """One AIO context whose fdatasyncs complete on an asyncio loop."""

    def __init__(self, libc: ctypes.CDLL, numbers: tuple[int, int, int, int], ctx: ctypes.c_ulong, efd: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._libc = libc
        _, self._nr_destroy, self._nr_getevents, self._nr_submit = numbers
        self._ctx = ctx
        self._efd = efd
        self._loop = loop
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[None]] = {}  # by the id each iocb carries (aio_data)
        self._events = ctypes.create_string_buffer(_EVENT.size * _MAX_EVENTS)
        self._no_wait = ctypes.create_string_buffer(16)  # struct timespec {0, 0}: reap without blocking
        self._closed = False
        loop.add_reader(efd, self._drain)

    @classmethod
    def open(cls, probe_dir: Path, loop: asyncio.AbstractEventLoop | None = None, *,
             capacity: int = 512) -> AioSync | None:
        """A context on `loop` (the running one), or None when AIO fdatasync is not available here.

        `probe_dir` is on the filesystem the WALs live on: one fdatasync of a scratch file there
        must succeed through AIO (kernels before 4.18 refuse the opcode; a sandbox may refuse
        the syscalls) before any WAL relies on it. `capacity`: syncs in flight at once; one more
        raises BlockingIOError (the caller syncs that one another way).
        """
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None or not hasattr(os, "eventfd"):
            return None
        loop = loop or asyncio.get_running_loop()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        ctx = ctypes.c_ulong(0)
        if libc.syscall(numbers[0], capacity, ctypes.byref(ctx)) != 0:
            log.info("native AIO unavailable (io_setup: %s); WAL syncs use a thread", os.strerror(ctypes.get_errno()))
            return None
        try:
            with tempfile.TemporaryFile(dir=probe_dir) as scratch:
                scratch.write(b"probe")
                scratch.flush()
                _probe(libc, numbers, ctx, scratch.fileno())
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as exc:
            libc.syscall(numbers[1], ctx)
            log.info("native AIO fdatasync unavailable (%s); WAL syncs use a thread", exc)
            return None
        return cls(libc, numbers, ctx, efd, loop)

    async def fdatasync(self, fd: int) -> None:
        """Wait until `fd`'s data written so far is durable. Raises OSError as os.fdatasync would,
        and BlockingIOError when the context already has `capacity` syncs in flight."""
        if self._closed:
            raise ValueError("AIO context is closed")
        ident = next(self._ids)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending[ident] = fut
        try:
            _submit(self._libc, self._nr_submit, self._ctx, ident, fd, _IOCB_FLAG_RESFD, self._efd)
        except OSError:
            del self._pending[ident]
            raise
        await fut

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        while self._pending:
            n = self._libc.syscall(self._nr_getevents, self._ctx, 0, _MAX_EVENTS, self._events, self._no_wait)
            if n <= 0:
                return
            for i in range(n):
                ident, _, res, _ = _EVENT.unpack_from(self._events, i * _EVENT.size)
                fut = self._pending.pop(ident, None)
                if fut is None or fut.done():
                    continue
                if res < 0:
                    fut.set_exception(OSError(-res, f"fdatasync: {os.strerror(-res)}"))
                else:
                    fut.set_result(None)

    def close(self) -> None:
        """Release the context. Syncs still in flight complete in the kernel; their waiters fail."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._efd)
        self._libc.syscall(self._nr_destroy, self._ctx)  # waits for in-flight requests
        os.close(self._efd)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ValueError("AIO context closed"))
        self._pending.clear()
