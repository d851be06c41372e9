"""What has been fetched from a remote POP3 account: a durable record of UIDLs.

Owns: :class:`FetchState`, one per ``[account NAME]`` of ``type = pop3``, kept in
``data_dir/fetch/NAME.uidl`` (with its lock ``NAME.lock``): for each message the remote
server lists by UIDL (RFC 1939 section 7) that we have dealt with, its
:class:`FetchStatus`, and for a held message its size. Must not: speak POP3, deliver
mail, decide what to fetch (the fetch code does, with the account's ``keep`` and
``max_size``), or log.

The order that makes fetching safe (DESIGN invariant 3), for each message:

1. the message is delivered here durably (Maildir or queue, fsynced and renamed);
2. then :meth:`FetchState.record` makes its UIDL durable (see below) and returns;
3. only then is the server asked to delete it (DELE, taking effect at QUIT).

A crash or a dropped link before step 2 completes loses nothing: the message is still
on the server and is fetched again, so the one message delivered in the short window
between the delivery's fsync and the record's fsync arrives twice. After step 2 it is
never fetched again: the next session sees the UIDL (and, with ``keep = no``, asks for
the deletion again if the server still lists it). Mail is never lost to save a duplicate.

A message larger than the account's ``max_size`` is not downloaded: the fetch code
delivers a notice and calls :meth:`FetchState.hold`. From the command line the
administrator then asks for it anyway (:meth:`FetchState.request_fetch`) or has it
deleted on the server unread (:meth:`FetchState.request_delete`); the next session acts
on the request. :meth:`FetchState.forget_missing`, given the session's complete UIDL
listing (taken before any DELE), drops what the server no longer has, so the file
stays as small as the remote mailbox.

Durability. The file is an append-only log of one-line records, each
``STATE SP UIDL SP SIZE SP CRC LF`` (``STATE`` one letter, ``SIZE`` decimal or ``-``,
``CRC`` the CRC-32 of what precedes it on the line, as 8 hex digits); a later record for
a UIDL replaces the earlier one. :meth:`FetchState.record` appends with one ``write``
and fsyncs the file before returning; a new file's directory is fsynced when it is
created. A crash can leave at most a torn last line (or, after a power cut, a tail of
zeros): a line without its ``LF`` or whose CRC does not match is not a record and is
never shown. :meth:`FetchState.open` rewrites the log (a new file, fsynced, renamed over
the old one, directory fsynced: the old file or the new one, never a mix) whenever it
holds such a line or superseded records, so appends always start on a clean line. A
failed append (disk full, I/O error) is cut off again before the error is raised, and
the UIDL then counts as not recorded: the caller must not ask for the deletion.

One holder at a time: :meth:`FetchState.open` takes an exclusive lock
(:class:`nosend_store.locks.FileLock`) that the fetch code keeps for the whole session;
the command line's requests wait for it (``timeout``) or report that a fetch is
running (:class:`nosend_store.locks.LockBusy`).

Servers without UIDL. UIDL is optional in RFC 1939 (section 7), and without it nothing
recognises a message from one session to the next: message numbers hold for one session
only, and headers such as Message-ID are neither unique nor always present. Such an
account can only be fetched with ``keep = no``, and nothing is recorded here for it:
each message is deleted (DELE) in the same session right after its durable delivery.
But POP3 deletes only at QUIT (RFC 1939 section 6, the UPDATE state): if the link drops
after some deliveries and before the server has answered QUIT, the server still has
those messages and the next session fetches and delivers them again. Nothing is lost;
mail can arrive twice. Only a server with UIDL avoids that.
"""

from __future__ import annotations

import enum
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

from nosend_store._durable import fsync_dir, write_new_file
from nosend_store.locks import FileLock, LockBusy

__all__ = ["FetchStatus", "FetchRecord", "FetchState", "FETCH_DIR"]

#: The directory under ``data_dir`` holding every account's record and lock.
FETCH_DIR = "fetch"

# RFC 1939 section 7: "The unique-id of a message is an arbitrary server-determined
# string, consisting of one to 70 characters in the range 0x21 to 0x7E".
_UIDL_RE = re.compile(r"[\x21-\x7e]{1,70}")
# An account name as mail.cfg allows it: also a safe file name (no "/", no leading ".").
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RECORD_RE = re.compile(rb"([DHFX]) ([\x21-\x7e]{1,70}) (-|\d{1,20}) ([0-9a-f]{8})")


class FetchStatus(enum.Enum):
    """Where one remote message stands."""

    #: Delivered here durably; on a ``keep = no`` account its deletion is pending until
    #: the server stops listing it.
    DELIVERED = "delivered"
    #: Over the account's ``max_size``: left on the server, a notice was delivered.
    HELD = "held"
    #: A held message the administrator wants fetched all the same.
    FETCH_REQUESTED = "fetch requested"
    #: A held message the administrator wants deleted on the server unread.
    DELETE_REQUESTED = "delete requested"


_CODE = {
    FetchStatus.DELIVERED: b"D",
    FetchStatus.HELD: b"H",
    FetchStatus.FETCH_REQUESTED: b"F",
    FetchStatus.DELETE_REQUESTED: b"X",
}
_STATUS = {code: status for status, code in _CODE.items()}


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """What is recorded for one UIDL: its status and, when known, its size in octets."""

    status: FetchStatus
    size: int | None = None


def _encode(uidl: str, record: FetchRecord) -> bytes:
    size = b"-" if record.size is None else str(record.size).encode("ascii")
    body = b"%s %s %s" % (_CODE[record.status], uidl.encode("ascii"), size)
    return b"%s %08x\n" % (body, zlib.crc32(body))


def _decode(line: bytes) -> tuple[str, FetchRecord] | None:
    """One complete line (without its LF) as a record; None if it is not a whole one."""
    m = _RECORD_RE.fullmatch(line)
    if m is None:
        return None
    body = line[: m.start(4) - 1]
    if int(m[4], 16) != zlib.crc32(body):
        return None
    size = None if m[3] == b"-" else int(m[3])
    return m[2].decode("ascii"), FetchRecord(_STATUS[m[1]], size)


def _check_uidl(uidl: str) -> None:
    if _UIDL_RE.fullmatch(uidl) is None:
        # A UIDL is no secret, but a broken one may be long: show its length only.
        raise ValueError(f"not an RFC 1939 unique-id ({len(uidl)} characters)")


def _check_size(size: int | None) -> None:
    # The file keeps at most 20 digits; no mailbox holds a message of 10**20 octets.
    if size is not None and not 0 <= size < 10**20:
        raise ValueError(f"bad message size {size}")


class FetchState:
    """The durable record of one POP3 account's fetched UIDLs. Make it with :meth:`open`.

    Not for several threads at once: one fetch session (or one command) holds it, under
    its lock, and closes it (or uses it as a context manager) when done.
    """

    __slots__ = ("_path", "_lock", "_fd", "_size", "_records", "_crash_hook")

    def __init__(
        self, path: Path, lock: FileLock, crash_hook: Callable[[str], None] | None = None
    ) -> None:
        """Use :meth:`open`, which takes the lock and reads the file."""
        self._path = path
        self._lock = lock
        self._fd: int | None = None
        self._size = 0
        self._records: dict[str, FetchRecord] = {}
        self._crash_hook = crash_hook

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        account_name: str,
        *,
        timeout: float = 0.0,
        crash_hook: Callable[[str], None] | None = None,
    ) -> FetchState:
        """Lock and read the record of ``account_name``, creating it if needed.

        Waits up to ``timeout`` seconds for another holder, then raises
        :class:`~nosend_store.locks.LockBusy`. Rewrites the file first when it holds a
        torn line or superseded records. ``crash_hook`` (tests only) is called with the
        name of each step at which a crash must leave a consistent file.
        """
        if _ACCOUNT_RE.fullmatch(account_name) is None:
            raise ValueError(f"bad account name {account_name!r}")
        directory = Path(data_dir) / FETCH_DIR
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fsync_dir(directory.parent)
        lock = FileLock(directory / f"{account_name}.lock")
        if not lock.acquire(timeout):
            raise LockBusy(lock.path)
        state = cls(directory / f"{account_name}.uidl", lock, crash_hook)
        try:
            state._load()
        except BaseException:
            state.close()
            raise
        return state

    # -- reading -----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The record file."""
        return self._path

    def seen(self, uidl: str) -> bool:
        """Whether anything is recorded for ``uidl`` (see :meth:`status` for what)."""
        return uidl in self._records

    def status(self, uidl: str) -> FetchStatus | None:
        """The status of ``uidl``; None when nothing is recorded for it."""
        record = self._records.get(uidl)
        return None if record is None else record.status

    def records(self) -> Mapping[str, FetchRecord]:
        """Every recorded UIDL, in the order first recorded (a read-only live view)."""
        return MappingProxyType(self._records)

    def __len__(self) -> int:
        """How many UIDLs are recorded."""
        return len(self._records)

    # -- changes, each durable when it returns -------------------------------------------

    def record(self, uidl: str, size: int | None = None) -> None:
        """Record ``uidl`` as delivered, durably: call it after the message is durably
        delivered here and before asking the server to delete it. Any earlier status
        (held, a request) is replaced; recording a delivered UIDL again writes nothing."""
        _check_uidl(uidl)
        _check_size(size)
        old = self._records.get(uidl)
        if old is not None and old.status is FetchStatus.DELIVERED:
            return
        if size is None and old is not None:
            size = old.size
        self._append(uidl, FetchRecord(FetchStatus.DELIVERED, size))

    def hold(self, uidl: str, size: int) -> None:
        """Record that ``uidl`` (``size`` octets, as LIST gave it) was left on the server
        for its size and a notice was delivered. ``ValueError`` if it was delivered or a
        request for it is pending (the fetch code must act on the request instead)."""
        _check_uidl(uidl)
        _check_size(size)
        old = self._records.get(uidl)
        if old is not None and old.status is not FetchStatus.HELD:
            raise ValueError(f"cannot hold a message whose status is {old.status.value!r}")
        if old is not None and old.size == size:
            return
        self._append(uidl, FetchRecord(FetchStatus.HELD, size))

    def request_fetch(self, uidl: str) -> None:
        """Ask that the held message ``uidl`` be fetched at the next session, whatever
        its size. ``KeyError`` if nothing is recorded for it, ``ValueError`` if it is not
        held (a delete request is replaced: the administrator changed their mind)."""
        self._request(uidl, FetchStatus.FETCH_REQUESTED)

    def request_delete(self, uidl: str) -> None:
        """Ask that the held message ``uidl`` be deleted on the server, unread, at the
        next session. ``KeyError`` if nothing is recorded for it, ``ValueError`` if it
        is not held (a fetch request is replaced)."""
        self._request(uidl, FetchStatus.DELETE_REQUESTED)

    def forget_missing(self, current_uidls: Iterable[str]) -> tuple[str, ...]:
        """Drop every UIDL not in ``current_uidls`` and return them, durably.

        Pass the server's complete UIDL listing taken at the start of a session, before
        any DELE: a message marked deleted in the session is no longer listed, yet its
        deletion is undone if the link drops before QUIT.
        """
        current = set(current_uidls)
        gone = tuple(uidl for uidl in self._records if uidl not in current)
        if gone:
            kept = {u: r for u, r in self._records.items() if u in current}
            self._rewrite(kept)
        return gone

    def _request(self, uidl: str, status: FetchStatus) -> None:
        _check_uidl(uidl)
        record = self._records.get(uidl)
        if record is None:
            raise KeyError(uidl)
        if record.status is status:
            return
        if record.status is FetchStatus.DELIVERED:
            raise ValueError("the message was already delivered")
        self._append(uidl, FetchRecord(status, record.size))

    # -- the file ------------------------------------------------------------------------

    def _hook(self, step: str) -> None:
        if self._crash_hook is not None:
            self._crash_hook(step)

    def _load(self) -> None:
        directory = self._path.parent
        tmp = self._path.with_name(self._path.name + ".tmp")
        # We hold the lock: a temporary file is what a crashed rewrite left behind.
        tmp.unlink(missing_ok=True)
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            data = None
        lines = 0
        whole = True
        if data:
            *complete, tail = data.split(b"\n")
            whole = tail == b""
            for line in complete:
                decoded = _decode(line)
                if decoded is None:
                    whole = False
                    continue
                lines += 1
                self._records[decoded[0]] = decoded[1]  # a later record replaces it
        if data is not None and (not whole or lines != len(self._records)):
            self._rewrite(self._records)
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self._path, flags, 0o600)
        self._size = len(data) if data is not None else 0
        if data is None:
            self._hook("before_create_dir_fsync")
            fsync_dir(directory)

    def _append(self, uidl: str, record: FetchRecord) -> None:
        fd = self._fd
        if fd is None:
            raise ValueError("FetchState is closed")
        line = _encode(uidl, record)
        self._hook("before_write")
        try:
            written = os.write(fd, line)
            while written < len(line):
                written += os.write(fd, line[written:])
            self._hook("before_fsync")
            os.fsync(fd)
        except BaseException:
            # Leave no partial line for the next append to be glued to; a line that
            # was written whole but not fsynced is cut off too: not durable, not recorded.
            try:
                os.ftruncate(fd, self._size)
                os.fsync(fd)
            except OSError:
                self.close()  # the next open rewrites the file from its whole lines
            raise
        self._hook("after_fsync")
        self._size += len(line)
        self._records[uidl] = record

    def _rewrite(self, records: Mapping[str, FetchRecord]) -> None:
        """Replace the file with one record per UIDL: the old file or the new, never a mix."""
        data = b"".join(_encode(u, r) for u, r in records.items())
        tmp = self._path.with_name(self._path.name + ".tmp")
        write_new_file(os.fspath(tmp), data, crash_hook=self._crash_hook)
        try:
            self._hook("before_rename")
            os.replace(tmp, self._path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # From here on the old file is gone from the directory: appends to it would be
        # lost, so our descriptor goes whatever happens next.
        old_fd, self._fd = self._fd, None
        if old_fd is not None:
            os.close(old_fd)
        self._hook("before_dir_fsync")
        fsync_dir(self._path.parent)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = len(data)
        if records is not self._records:
            self._records = dict(records)

    def close(self) -> None:
        """Close the file and release the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._lock.release()

    def __enter__(self) -> FetchState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
