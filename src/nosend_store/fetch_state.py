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
on the server and is fetched again. After step 2 it is never fetched again: the next
session sees the UIDL (and, with ``keep = no``, asks for the deletion again if the
server still lists it). Mail is never lost to save a duplicate.

Closing the window between steps 1 and 2 (exactly once). Step 1 is split so that no
instant exists at which a message is visible to readers and not known here:

1a. every copy is written to its Maildir's ``tmp/`` and fsynced (:class:`StagedCopies`);
1b. :meth:`FetchState.begin` durably records a *pending* entry: the UIDL and, for each
    copy, the Maildir and the final name it will have in ``new/``;
1c. the copies are renamed into ``new/`` and ``new/`` is fsynced;
2.  :meth:`FetchState.record` (or :meth:`FetchState.hold` for a notice) replaces the
    pending entry.

:meth:`FetchState.open` settles every pending entry it finds (a crash between 1b and 2):
a copy already in ``new/`` or ``cur/`` (same base name before ``:2,``) is delivered; a
copy still in ``tmp/`` is complete and durable (1a came first), so it is renamed into
``new/`` now (rolled forward); when every copy is there the entry becomes what it was
going to be (delivered, or held). A copy that is in neither place can only mean that
something removed it since (a reader deleted the message, or a ``tmp/`` file was swept
as stale before the next session): the entry then reverts to what was recorded before
it, so the message is fetched again -- a possible duplicate rather than a possible
loss. A crash before 1b leaves only ``tmp/`` files that nothing refers to: garbage, swept
by the Maildir's ``tmp/`` cleaning. The same protocol delivers the notice of a held
message, so that notice is never delivered twice either.

A message larger than the account's ``max_size`` is not downloaded: the fetch code
delivers a notice and calls :meth:`FetchState.hold`. From the command line the
administrator then asks for it anyway (:meth:`FetchState.request_fetch`) or has it
deleted on the server unread (:meth:`FetchState.request_delete`); the next session acts
on the request. A fetch request may name a link: only a session over that link acts on
it (large mail waits for the cheap link). A held record keeps a few words about the
message (sender, subject, date) for ``nosend held list``.
:meth:`FetchState.forget_missing`, given the session's complete UIDL listing (taken
before any DELE), drops what the server no longer has, so the file
stays as small as the remote mailbox.

Durability. The file is an append-only log of one-line records, each
``STATE SP UIDL SP SIZE [SP EXTRA] SP CRC LF`` (``STATE`` one letter, ``SIZE`` decimal
or ``-``, ``EXTRA`` a URL-safe base64 JSON object -- the link of a fetch request, the
summary of a held message, the copies of a pending entry --, ``CRC`` the CRC-32 of what
precedes it on the line, as 8 hex digits); a later record for a UIDL replaces the
earlier one. Files written before ``EXTRA`` existed read the same.
:meth:`FetchState.record` appends with one ``write`` and fsyncs the file before
returning; a new file's directory is fsynced when it is
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
each message is deleted (DELE) in the same session once durably delivered.
But POP3 deletes only at QUIT (RFC 1939 section 6, the UPDATE state): if the link drops
after some deliveries and before the server has answered QUIT, the server still has
those messages and the next session fetches and delivers them again. Nothing is lost;
mail can arrive twice. Only a server with UIDL avoids that.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

from nosend_store._durable import StagedFile, UniqueNamer, fsync_dir, write_new_file
from nosend_store.locks import FileLock, LockBusy

__all__ = ["FetchStatus", "FetchRecord", "FetchState", "StagedCopies", "FETCH_DIR"]

#: The directory under ``data_dir`` holding every account's record and lock.
FETCH_DIR = "fetch"

# RFC 1939 section 7: "The unique-id of a message is an arbitrary server-determined
# string, consisting of one to 70 characters in the range 0x21 to 0x7E".
_UIDL_RE = re.compile(r"[\x21-\x7e]{1,70}")
# An account name as mail.cfg allows it: also a safe file name (no "/", no leading ".").
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RECORD_RE = re.compile(
    rb"([DHFXPQ]) ([\x21-\x7e]{1,70}) (-|\d{1,20})(?: ([A-Za-z0-9_-]+=*))? ([0-9a-f]{8})"
)
# A Maildir key as made here (UniqueNamer, then ,S= and ,W=): no "/", no ":".
_KEY_RE = re.compile(r"[^/:\x00]{1,255}")


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
    #: Being delivered: copies staged in ``tmp/``, not all published yet (see above).
    PENDING = "pending delivery"
    #: The notice of a held message is being delivered the same way.
    PENDING_HOLD = "pending notice"


_CODE = {
    FetchStatus.DELIVERED: b"D",
    FetchStatus.HELD: b"H",
    FetchStatus.FETCH_REQUESTED: b"F",
    FetchStatus.DELETE_REQUESTED: b"X",
    FetchStatus.PENDING: b"P",
    FetchStatus.PENDING_HOLD: b"Q",
}
_STATUS = {code: status for status, code in _CODE.items()}


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """What is recorded for one UIDL: its status and, when known, its size in octets.

    ``link``: for a fetch request, the only link it may be fetched over (None: any).
    ``info``: for a held message, ``(name, value)`` pairs such as ``("subject", ...)``.
    ``copies``: for a pending entry, ``(maildir, key)`` of each copy being delivered;
    ``previous``: the status to go back to if the pending delivery did not happen.
    """

    status: FetchStatus
    size: int | None = None
    link: str | None = None
    info: tuple[tuple[str, str], ...] = ()
    copies: tuple[tuple[str, str], ...] = ()
    previous: FetchStatus | None = None

    def get(self, name: str) -> str | None:
        """The ``info`` value called ``name``, if any."""
        for key, value in self.info:
            if key == name:
                return value
        return None


def _extra(record: FetchRecord) -> dict[str, object]:
    extra: dict[str, object] = {}
    if record.link is not None:
        extra["link"] = record.link
    if record.info:
        extra["info"] = [list(pair) for pair in record.info]
    if record.copies:
        extra["copies"] = [list(pair) for pair in record.copies]
    if record.previous is not None:
        extra["previous"] = _CODE[record.previous].decode("ascii")
    return extra


def _encode(uidl: str, record: FetchRecord) -> bytes:
    size = b"-" if record.size is None else str(record.size).encode("ascii")
    body = b"%s %s %s" % (_CODE[record.status], uidl.encode("ascii"), size)
    extra = _extra(record)
    if extra:
        text = json.dumps(extra, separators=(",", ":"), ensure_ascii=False)
        body += b" " + base64.urlsafe_b64encode(text.encode("utf-8"))
    return b"%s %08x\n" % (body, zlib.crc32(body))


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        (str(p[0]), str(p[1])) for p in value if isinstance(p, list) and len(p) == 2
    )


def _decode(line: bytes) -> tuple[str, FetchRecord] | None:
    """One complete line (without its LF) as a record; None if it is not a whole one."""
    m = _RECORD_RE.fullmatch(line)
    if m is None:
        return None
    body = line[: m.start(5) - 1]
    if int(m[5], 16) != zlib.crc32(body):
        return None
    size = None if m[3] == b"-" else int(m[3])
    extra: dict[str, object] = {}
    if m[4] is not None:
        try:
            loaded = json.loads(base64.urlsafe_b64decode(m[4]).decode("utf-8"))
        except (binascii.Error, ValueError):
            return None
        if isinstance(loaded, dict):
            extra = loaded
    link = extra.get("link")
    previous = extra.get("previous")
    record = FetchRecord(
        _STATUS[m[1]],
        size,
        link=link if isinstance(link, str) else None,
        info=_pairs(extra.get("info")),
        copies=_pairs(extra.get("copies")),
        previous=(
            _STATUS.get(previous.encode("ascii", "replace"))
            if isinstance(previous, str)
            else None
        ),
    )
    return m[2].decode("ascii"), record


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
        (held, a request, pending) is replaced; recording a delivered UIDL again writes
        nothing."""
        _check_uidl(uidl)
        _check_size(size)
        old = self._records.get(uidl)
        if old is not None and old.status is FetchStatus.DELIVERED:
            return
        if size is None and old is not None:
            size = old.size
        self._append(uidl, FetchRecord(FetchStatus.DELIVERED, size))

    def begin(
        self,
        uidl: str,
        size: int | None,
        copies: Iterable[tuple[str, str]],
        *,
        then: FetchStatus = FetchStatus.DELIVERED,
        info: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Durably note that ``copies`` (``(maildir, key)``, already complete and fsynced
        in ``maildir/tmp/``, see :class:`StagedCopies`) are about to be renamed into
        ``new/`` for ``uidl``; ``then`` is :attr:`FetchStatus.DELIVERED` for the message
        itself or :attr:`FetchStatus.HELD` for its notice (``info`` is then the summary
        kept for ``nosend held list``). Follow with the renames, then :meth:`record` or
        :meth:`hold`; a crash in between is settled by the next :meth:`open`."""
        _check_uidl(uidl)
        _check_size(size)
        pairs = tuple((os.fspath(m), k) for m, k in copies)
        if not pairs:
            raise ValueError("a pending delivery needs at least one copy")
        for _, key in pairs:
            if _KEY_RE.fullmatch(key) is None:
                raise ValueError("not a Maildir key")
        if then not in (FetchStatus.DELIVERED, FetchStatus.HELD):
            raise ValueError("a pending delivery ends delivered or held")
        old = self._records.get(uidl)
        if old is not None and old.status is FetchStatus.DELIVERED:
            raise ValueError("the message was already delivered")
        status = FetchStatus.PENDING if then is FetchStatus.DELIVERED else FetchStatus.PENDING_HOLD
        previous = None if old is None else old.status
        if previous in (FetchStatus.PENDING, FetchStatus.PENDING_HOLD):
            previous = old.previous if old is not None else None
        self._append(
            uidl,
            FetchRecord(status, size, info=tuple(info) or (() if old is None else old.info),
                        copies=pairs, previous=previous, link=None if old is None else old.link),
        )

    def hold(self, uidl: str, size: int, info: Iterable[tuple[str, str]] = ()) -> None:
        """Record that ``uidl`` (``size`` octets, as LIST gave it) was left on the server
        for its size and a notice was delivered; ``info`` is a short summary (sender,
        subject, date) for ``nosend held list``. ``ValueError`` if it was delivered or a
        request for it is pending (the fetch code must act on the request instead)."""
        _check_uidl(uidl)
        _check_size(size)
        old = self._records.get(uidl)
        pairs = tuple(info)
        if old is not None and old.status not in (FetchStatus.HELD, FetchStatus.PENDING_HOLD):
            raise ValueError(f"cannot hold a message whose status is {old.status.value!r}")
        if old is not None:
            pairs = pairs or old.info
            if old.status is FetchStatus.HELD and old.size == size and old.info == pairs:
                return
        self._append(uidl, FetchRecord(FetchStatus.HELD, size, info=pairs))

    def request_fetch(self, uidl: str, link: str | None = None) -> None:
        """Ask that the held message ``uidl`` be fetched at the next session, whatever
        its size; with ``link``, only at the next session over that link. ``KeyError``
        if nothing is recorded for it, ``ValueError`` if it is not held (a delete
        request is replaced: the administrator changed their mind)."""
        self._request(uidl, FetchStatus.FETCH_REQUESTED, link)

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

    def _request(self, uidl: str, status: FetchStatus, link: str | None = None) -> None:
        _check_uidl(uidl)
        record = self._records.get(uidl)
        if record is None:
            raise KeyError(uidl)
        if record.status is status and record.link == link:
            return
        if record.status is FetchStatus.DELIVERED:
            raise ValueError("the message was already delivered")
        if record.status not in (
            FetchStatus.HELD, FetchStatus.FETCH_REQUESTED, FetchStatus.DELETE_REQUESTED
        ):
            raise ValueError(f"the message is {record.status.value}, not held")
        self._append(uidl, FetchRecord(status, record.size, link=link, info=record.info))

    # -- settling pending deliveries -------------------------------------------------------

    def _settle(self) -> bool:
        """Settle every pending entry left by a crash (see the module docstring);
        return whether any record changed (the caller rewrites the file)."""
        changed = False
        for uidl, record in list(self._records.items()):
            if record.status not in (FetchStatus.PENDING, FetchStatus.PENDING_HOLD):
                continue
            changed = True
            if all(_settle_copy(maildir, key, self._hook) for maildir, key in record.copies):
                if record.status is FetchStatus.PENDING:
                    self._records[uidl] = FetchRecord(FetchStatus.DELIVERED, record.size)
                else:
                    self._records[uidl] = FetchRecord(
                        FetchStatus.HELD, record.size, info=record.info)
            elif record.previous is None:
                del self._records[uidl]
            else:
                self._records[uidl] = FetchRecord(
                    record.previous, record.size, link=record.link, info=record.info)
        return changed

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
        settled = self._settle()
        if data is not None and (settled or not whole or lines != len(self._records)):
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


def _settle_copy(maildir: str, key: str, hook: Callable[[str], None]) -> bool:
    """Whether one copy of a pending delivery is (now) in ``new/`` or ``cur/``: already
    there, or rolled forward from ``tmp/``, where it was complete and durable."""
    if _KEY_RE.fullmatch(key) is None:
        return False
    new_dir = os.path.join(maildir, "new")
    if os.path.exists(os.path.join(new_dir, key)):
        return True
    try:
        names = os.listdir(os.path.join(maildir, "cur"))
    except FileNotFoundError:
        names = []
    if any(name.partition(":")[0] == key for name in names):
        return True
    unique = key.partition(",")[0]
    tmp = os.path.join(maildir, "tmp", unique)
    if not os.path.isfile(tmp):
        return False
    hook("before_roll_forward")
    os.rename(tmp, os.path.join(new_dir, key))
    fsync_dir(new_dir)
    return True


class StagedCopies:
    """One message being written to ``tmp/`` of one or more Maildirs, for a fetch.

    :meth:`write` takes the chunks (CRLF or LF line ends), :meth:`finish` fsyncs every
    copy and returns their ``(maildir, key)`` for :meth:`FetchState.begin`, and
    :meth:`publish` renames them into ``new/`` and fsyncs ``new/``. The keys have the
    form :class:`nosend_store.maildir.MaildirMailbox` gives its own deliveries
    (``<unique>,S=<disk size>,W=<wire size>``), so readers see no difference. :meth:`abort`
    removes whatever was not published. Blocking file work throughout.
    """

    __slots__ = ("_copies", "_keys", "_hook")

    def __init__(
        self,
        maildirs: Iterable[str | os.PathLike[str]],
        namer: UniqueNamer | None = None,
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        namer = namer if namer is not None else UniqueNamer()
        self._hook = crash_hook
        self._copies: list[tuple[str, str, StagedFile]] = []
        self._keys: list[tuple[str, str]] = []
        try:
            for maildir in dict.fromkeys(os.path.abspath(os.fspath(m)) for m in maildirs):
                _make_maildir(maildir)
                unique = namer.new_name()
                staged = StagedFile(os.path.join(maildir, "tmp", unique))
                self._copies.append((maildir, unique, staged))
        except BaseException:
            self.abort()
            raise
        if not self._copies:
            raise ValueError("a message needs at least one Maildir")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to every copy."""
        for _, _, staged in self._copies:
            staged.write(chunk)

    def finish(self) -> tuple[tuple[str, str], ...]:
        """Fsync every copy; return ``(maildir, key)`` of each, for :meth:`FetchState.begin`."""
        keys = []
        for maildir, unique, staged in self._copies:
            staged.finish(self._hook)
            keys.append((maildir, f"{unique},S={staged.disk_size},W={staged.wire_size}"))
        self._keys = keys
        return tuple(keys)

    def publish(self) -> None:
        """Rename every copy into ``new/`` and fsync ``new/`` (after :meth:`finish` and
        :meth:`FetchState.begin`)."""
        if not self._keys:
            raise RuntimeError("finish() first")
        for (maildir, unique, _), (_, key) in zip(self._copies, self._keys, strict=True):
            if self._hook:
                self._hook("before_publish")
            new_dir = os.path.join(maildir, "new")
            os.rename(os.path.join(maildir, "tmp", unique), os.path.join(new_dir, key))
            fsync_dir(new_dir)
        self._copies = []

    def abort(self) -> None:
        """Remove every copy not yet published. Idempotent."""
        for maildir, unique, staged in self._copies:
            staged.close()
            try:
                os.unlink(os.path.join(maildir, "tmp", unique))
            except FileNotFoundError:
                pass
        self._copies = []


def _make_maildir(path: str) -> None:
    made = False
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        fsync_dir(os.path.dirname(path))
        made = True
    for sub in ("tmp", "new", "cur"):
        try:
            os.mkdir(os.path.join(path, sub), 0o700)
            made = True
        except FileExistsError:
            pass
    if made:
        fsync_dir(path)
