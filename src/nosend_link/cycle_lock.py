"""Two durable facts about cycles: one runs at a time, and which links are up.

Owns: :class:`CycleLock` (an exclusive, non-blocking ``flock`` on ``state/cycle.lock``;
the holder writes its pid into the file so a second cycle can say who holds it) and
:class:`UpMarker` (``state/link-up.json``: the links brought up and not yet brought
down, with the ``down`` command to use, written durably *before* ``up`` runs).

Why a marker before ``up``: if nosend is killed (SIGKILL, power cut, OOM) while a link
is up, nothing else would ever hang it up, and an Iridium call left open costs a dollar
a minute. The next cycle, ``nosend watch`` or ``nosend serve`` reads the marker and runs
``down`` first. It keeps the ``down`` command itself, so a link renamed or removed from
``mail.cfg`` meanwhile can still be brought down. An entry is removed only after its
``down`` succeeded; a failed ``down`` stays for the next try.

Why ``flock``: the kernel drops it when the holder dies, so a killed cycle never leaves
a stale lock (the pid in the file is only a message). The descriptor is close-on-exec,
so a daemon that ``up`` starts (pppd) never inherits the lock.

Must not: run commands or decide anything; the cycle does. Neither file holds a secret.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["CycleBusy", "CycleLock", "LinkUp", "MarkerError", "UpMarker", "state_dir"]


def state_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir/state``, created (owner only) if missing."""
    path = Path(data_dir) / "state"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class CycleBusy(Exception):
    """Another cycle holds the lock; ``pid`` is its process id when it could be read."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(
            f"another cycle is running (pid {pid})" if pid is not None
            else "another cycle is running"
        )


class CycleLock:
    """The overlap lock: ``with CycleLock(state):`` or :meth:`acquire`/:meth:`release`."""

    __slots__ = ("_path", "_fd")

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self._path = Path(state) / "cycle.lock"
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self._path

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`CycleBusy` naming the holder's pid."""
        if self._fd is not None:
            raise RuntimeError("CycleLock is not re-entrant")
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise CycleBusy(pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Idempotent. The file stays (see ``nosend_store.locks``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> CycleLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # the holder has not written it yet


class MarkerError(Exception):
    """The link-up marker exists but cannot be read."""


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A link that was being brought up: its name, ``down`` command, when and by whom."""

    link: str
    down: tuple[str, ...]
    since: float
    pid: int


class UpMarker:
    """``state/link-up.json``: the links that may be up. Replaced atomically and fsynced
    on every change, so a reader sees the old list or the new one."""

    __slots__ = ("_path",)

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self._path = Path(state) / "link-up.json"

    @property
    def path(self) -> Path:
        """The marker file."""
        return self._path

    def read(self) -> tuple[LinkUp, ...]:
        """The links recorded as up (empty when there is no marker)."""
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return ()
        try:
            data = json.loads(raw)
            return tuple(
                LinkUp(str(e["link"]), tuple(str(a) for a in e["down"]), float(e["since"]),
                       int(e["pid"]))
                for e in data["links"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MarkerError(f"{self._path}: unreadable ({exc.__class__.__name__})") from None

    def add(self, entry: LinkUp) -> None:
        """Record ``entry`` (replacing one for the same link); durable on return."""
        kept = [e for e in self._read_or_empty() if e.link != entry.link]
        self._write([*kept, entry])

    def remove(self, link: str) -> None:
        """Forget ``link``; the file goes when no link is left. Durable on return."""
        kept = [e for e in self._read_or_empty() if e.link != link]
        if kept:
            self._write(kept)
        elif self._path.exists():
            self._path.unlink()
            _fsync_dir(self._path.parent)

    def clear(self) -> None:
        """Remove the marker whatever it holds (an unreadable one included)."""
        try:
            self._path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self._path.parent)

    def _read_or_empty(self) -> tuple[LinkUp, ...]:
        try:
            return self.read()
        except MarkerError:
            return ()

    def _write(self, entries: list[LinkUp]) -> None:
        data = {"links": [{"link": e.link, "down": list(e.down), "since": e.since,
                           "pid": e.pid} for e in entries]}
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # A root `nosend check` writes into the service user's state/: the marker is
            # that user's from the start, so that after a kill -9 (which skips handing
            # state/ back) the server, running as that user, can read and clear it.
            folder = os.stat(self._path.parent)
            if os.geteuid() == 0 and folder.st_uid != 0:
                os.fchown(fd, folder.st_uid, folder.st_gid)
            payload = memoryview(json.dumps(data).encode())
            while payload:
                payload = payload[os.write(fd, payload):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
