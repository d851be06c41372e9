"""An anyio byte stream over a pair of plain file descriptors (pipes, ttys, files).

Owns: non-blocking reads and writes on a read fd and a write fd, waiting for readiness
through anyio (epoll on asyncio, trio's I/O manager), so one inetd session over pipes
(socat ``EXEC:...,pipes``, a test harness, a shell) gets the same timeouts and TLS as a
socket: ``TLSStream`` runs on top of it through OpenSSL's MemoryBIO. Must not: be used for
sockets (anyio's own socket streams are better there) or know any protocol.
"""

from __future__ import annotations

import fcntl
import os
import stat

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["FdByteStream"]


class FdByteStream(anyio.abc.ByteStream):
    """Read from ``read_fd`` and write to ``write_fd``; this stream owns both fds.

    The fds are switched to non-blocking mode (regular files, which epoll cannot wait
    on, are read and written directly: they never block for long) and their original
    flags are restored on close, because the flag belongs to an open file description
    other processes may share (a terminal).
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self._saved: dict[int, int] = {}
        self._pollable: dict[int, bool] = {}
        self._closed = False
        self._write_closed = False
        for fd in {read_fd, write_fd}:
            pollable = not stat.S_ISREG(os.fstat(fd).st_mode)
            self._pollable[fd] = pollable
            if pollable:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                self._saved[fd] = flags
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return the next bytes read; ``EndOfStream`` at end of file."""
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._read_fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._read_fd)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            if not self._pollable[self._read_fd]:
                await anyio.lowlevel.checkpoint()
            return data

    async def send(self, item: bytes) -> None:
        """Write all of ``item``, waiting while the reader is slow."""
        view = memoryview(item)
        while view:
            if self._closed or self._write_closed:
                raise anyio.ClosedResourceError
            try:
                written = os.write(self._write_fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self._write_fd)
                continue
            except OSError as exc:  # EPIPE: the reader went away
                raise anyio.BrokenResourceError from exc
            view = view[written:]
        await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """Close the write side so the reader sees end of file."""
        if not self._write_closed and self._write_fd != self._read_fd:
            self._write_closed = True
            self._restore(self._write_fd)
            os.close(self._write_fd)

    def _restore(self, fd: int) -> None:
        flags = self._saved.pop(fd, None)
        if flags is not None:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            except OSError:
                pass

    async def aclose(self) -> None:
        """Restore the fds' flags and close them."""
        if self._closed:
            return
        self._closed = True
        fds = {self._read_fd} if self._write_closed else {self._read_fd, self._write_fd}
        for fd in fds:
            self._restore(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        await anyio.lowlevel.checkpoint()
