"""The authentication-failure tracker shared by processes, for ``nosend inetd``.

Owns: :class:`FileAuthFailureTracker`, an :class:`~nosend_runners.serve.limits.AuthFailureTracker`
whose memory is a small JSON file under the data folder. Under a super-server every
connection is a new process, so an in-memory tracker forgot each guess with its
connection: a guesser got fresh attempts by reconnecting. With the file, the per-address
lockout (issue 5: "a per-address lockout after repeated failures") holds across
connections, as under ``nosend serve``; an attempt is counted when it is admitted, in
the same exclusive lock as the lockout check, so parallel connections cannot all slip
past the check. Must not: hold the lock across a password check or a delay; it is taken
only to read and to update the file.

The file is advisory state, not mail: it is replaced atomically (a crash leaves the old
or the new table, never half of one) but not fsynced; after a power cut the worst case is
failures forgotten, as on a restart of ``nosend serve``. A file that cannot be read,
parsed or written is logged once and the tracker carries on in memory for that process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nosend_runners.serve.limits import Admission, AuthFailureTracker

__all__ = ["FileAuthFailureTracker", "auth_failures_path"]

_log = logging.getLogger("nosend.server")


def auth_failures_path(data_dir: Path) -> Path:
    """Where ``nosend inetd`` keeps the failures table: ``data_dir/state/auth-failures.json``."""
    return data_dir / "state" / "auth-failures.json"


class FileAuthFailureTracker(AuthFailureTracker):
    """``AuthFailureTracker`` kept in ``path`` and shared by every process using it.

    Each question re-reads the file under a shared lock and each change rewrites it under
    an exclusive one, so the answers are those of the table as all processes left it.
    Time stamps are wall-clock seconds (processes share no monotonic origin across a
    reboot). At most ``max_addresses`` addresses are kept, as in memory.
    """

    __slots__ = ("_path", "_lock_path", "_broken")

    def __init__(
        self,
        path: Path,
        max_failures: int = 5,
        window: float = 900.0,
        max_delay: float = 8.0,
        clock: Callable[[], float] = time.time,
        max_addresses: int = 2_000,
    ) -> None:
        super().__init__(max_failures, window, max_delay, clock, max_addresses)
        self._path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._broken = False  # after a file error: this process goes on in memory

    def failures(self, address: str) -> int:
        """Number of failures from ``address`` within the window, in the shared table."""
        with self._shared(write=False):
            return super().failures(address)

    def blocked(self, address: str) -> bool:
        """Whether ``address`` has used up its failures, in the shared table."""
        with self._shared(write=False):
            return super().blocked(address)

    def failure_delay(self, address: str) -> float:
        """Seconds to wait before answering a failure (see the base class)."""
        with self._shared(write=False):
            return super().failure_delay(address)

    def admit(self, address: str, user: str = "") -> Admission:
        """Count one attempt in the shared table if the client has attempts left; the
        check and the count happen under one exclusive lock, so processes started
        together cannot all pass the check before any of them counted."""
        with self._shared(write=True):
            return super().admit(address, user)

    def fail(self, address: str, ticket: int) -> int:
        """The attempt ``ticket`` failed, in the shared table (see the base class)."""
        with self._shared(write=True):
            return super().fail(address, ticket)

    def succeed(self, address: str, ticket: int, user: str = "") -> None:
        """The attempt ``ticket`` proved ``user``, in the shared table."""
        with self._shared(write=True):
            super().succeed(address, ticket, user)

    def record_failure(self, address: str, user: str = "") -> int:
        """Note one failed authentication from ``address`` in the shared table; return
        its failures within the window."""
        with self._shared(write=True):
            return super().record_failure(address, user)

    def record_success(self, address: str, user: str = "") -> None:
        """Forget ``user``'s failures from ``address`` in the shared table."""
        with self._shared(write=True):
            super().succeed(address, 0, user)

    @contextmanager
    def _shared(self, *, write: bool) -> Iterator[None]:
        if self._broken:
            yield
            return
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._give_up(exc)
            yield
            return
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            self._load()
            yield
            if write and not self._broken:
                self._save()
        finally:
            os.close(lock_fd)  # closing releases the lock

    def _load(self) -> None:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            self._failures = {}
            return
        except OSError as exc:
            self._give_up(exc)
            return
        try:
            table = json.loads(raw)
            # Stamps ahead of the clock were written before it went back: dropped, or
            # the lockout would last until the clock caught up again (maybe years).
            now = self._clock()
            loaded = {
                str(client): [e for e in map(_entry, entries) if float(e[0]) <= now]
                for client, entries in table.items()
                if isinstance(entries, list)
            }
        except (ValueError, TypeError, AttributeError):
            # Unreadable state is no reason to refuse logins: start an empty table.
            _log.warning("auth failure table %s is damaged; starting it afresh", self._path)
            loaded = {}
        self._failures = loaded

    def _save(self) -> None:
        # Entries as [time, user, ticket]; a file from before user names and tickets
        # held bare time stamps, read as failures of no particular user.
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._failures, separators=(",", ":")))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        if not self._broken:
            self._broken = True
            _log.error(
                "auth failure table %s unusable (%s); this connection tracks failures alone",
                self._path,
                exc.strerror or exc,
            )


def _entry(item: object) -> list[float | str | int]:
    """One attempt read from the file: ``[time, user, ticket]``, or a bare time stamp
    (the format before user names), which is a failure of no particular user."""
    if isinstance(item, list) and len(item) == 3:
        return [float(item[0]), str(item[1]), int(item[2])]
    if isinstance(item, int | float):
        return [float(item), "", 0]
    raise ValueError("not an attempt")
