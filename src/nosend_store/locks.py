"""Exclusive locks that a crashed process cannot leave stuck.

Owns: :class:`FileLock`, an exclusive ``flock(2)`` on a lock file, used for the POP3
session lock of a mailbox (RFC 1939 section 4: after authentication the server
"acquires an exclusive-access lock on the maildrop" until the UPDATE state) and for
claiming queued messages.

Why ``flock`` and a fresh ``open`` per lock object:

- the kernel drops the lock when the last descriptor of the open file description is
  closed, so a process killed by SIGKILL or a power cut never leaves a lock behind
  (there is no pid file to go stale);
- ``flock`` locks belong to the open file description, not to the process (unlike
  ``fcntl``/``lockf`` record locks), so two sessions in ONE process — the anyio server
  runs many in worker threads — exclude each other as well, with no process-global
  registry.

Limits: on NFS, Linux emulates ``flock`` with ``fcntl`` record locks, which do not
exclude threads of one process; keep mail on a local filesystem. A child forked while a
lock is held keeps it until the child exits (descriptors are close-on-exec, so an
exec'd program does not).

Must not: block the event loop. Acquisition is non-blocking, or polls with a bounded
timeout; the runner calls it from a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from types import TracebackType

__all__ = ["LockBusy", "FileLock"]


class LockBusy(Exception):
    """Another session or process holds the lock."""


class FileLock:
    """An exclusive lock on ``path`` (created if missing, never deleted).

    Use as a context manager (raises :class:`LockBusy` if not acquired at once) or call
    :meth:`acquire` with a timeout. One object is one holder; it is not re-entrant.

    The lock file is never unlinked: unlinking would let a waiter lock the old inode
    while a newcomer locks a fresh file of the same name, and both would "hold" it.
    """

    __slots__ = ("_path", "_fd")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._fd: int | None = None

    @property
    def path(self) -> str:
        """The lock file's path."""
        return self._path

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def same_file_as(self, path: str | os.PathLike[str]) -> bool:
        """True if the held lock is on the file now at ``path`` (False if it was
        removed or replaced after we opened it)."""
        if self._fd is None:
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        own = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def acquire(self, timeout: float = 0.0, poll_interval: float = 0.05) -> bool:
        """Try to take the lock; wait up to ``timeout`` seconds. Return True if held."""
        if self._fd is not None:
            raise RuntimeError("FileLock is not re-entrant")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # A filesystem remounted read-only (the kernel does so after I/O errors):
            # flock works on a read-only descriptor, and a session that can still read
            # its mail should get it. A missing lock file cannot be made: EROFS stands.
            try:
                fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise exc from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll_interval)
                continue
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> FileLock:
        if not self.acquire():
            raise LockBusy(self._path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A forgotten lock object must not keep a mailbox locked for the process' life.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
