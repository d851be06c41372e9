"""Maildir mailboxes that Dovecot and mutt read as they are.

Owns: :class:`MaildirMailbox` — durable delivery from a stream of chunks (or, for a
small message, from the whole message in memory), the POP3 view
(listing with stable UIDLs and exact wire sizes, streamed reads, deletion at QUIT, the
session lock), flags, deletion, tmp/ cleanup.

On-disk format (Maildir specification, cr.yp.to/proto/maildir.html, with the Dovecot
extensions doc.dovecot.org "Maildir mailbox format"):

- ``tmp/ new/ cur/``; a message is written in ``tmp/``, fsynced, renamed into ``new/``,
  ``new/`` is fsynced, and only then is the key returned — the caller may acknowledge
  (DESIGN invariant 1). The specification's ``link`` + ``unlink`` guards against
  clobbering a file of the same name; our names carry time, pid, a per-process counter
  and 32 random bits, so like Dovecot we ``rename``: one system call and one journal
  update fewer per delivery, and no second name left in ``tmp/`` by a crash. Stray
  ``tmp/`` files of crashed deliveries are removed by :meth:`MaildirMailbox.clean_tmp`.
- file name ``<unique>,S=<disk size>,W=<wire size>[:2,<flags>]`` where ``<unique>`` is
  made by :class:`nosend_store._durable.UniqueNamer`. Dovecot reads ``,S=`` and ``,W=``
  instead of stat/reading the file; we read ``,W=`` for POP3 sizes.
- content is stored with LF line ends (what mutt and Dovecot expect) and always ends with
  LF; the wire size therefore is disk size + number of LFs.
- flags: ``:2,`` followed by the flag letters in ASCII order (``D F P R S T``); a message
  with flags lives in ``cur/``.

Keys: a message's key is its base name (everything before ``:``), unchanged when flags
change. Its POP3 UIDL is the key itself — what Dovecot reports with
``pop3_uidl_format = %f`` — or a digest of the key when the key is not a valid RFC 1939
UIDL (over 70 octets, e.g. with a long host name).

Files that other programs put in ``new/``/``cur/`` without ``,W=`` get their wire size
computed once and cached in ``nosend-wiresizes`` in the Maildir root (a cache: losing it
only costs a re-read).

Must not: hold a message in memory, speak a protocol, or rely on process-global state —
the runner calls these methods from many worker threads and processes at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from ._durable import (
    StagedFile,
    UniqueNamer,
    atomic_write,
    crlf_chunks,
    disk_form,
    fsync_dir,
    measure_wire_size,
    write_new_file,
)
from .drop import DropMessage, DropSession, MessageGone
from .locks import FileLock, LockBusy

__all__ = [
    "MaildirMailbox",
    "MaildirWriter",
    "MaildirMessage",
    "MaildirDropSession",
    "LockBusy",
    "MessageGone",
    "VALID_FLAGS",
    "uidl_for_key",
]

#: Maildir flags understood by mutt and Dovecot (Maildir specification, "info" part).
VALID_FLAGS = frozenset("DFPRST")

_LOCK_NAME = "nosend-pop3.lock"
_SIZE_CACHE_NAME = "nosend-wiresizes"
_TMP_MAX_AGE = 36 * 3600  # Maildir specification: tmp files older than 36 hours are junk.
# deliver() of a list or tuple up to this size writes it at once (deliver_bytes).
_WHOLE_MAX = 256 * 1024
_TIME_RE = re.compile(r"^(\d+)\.(?:M(\d+))?")
_WIRE_RE = re.compile(r",W=(\d+)")
_UIDL_RE = re.compile(r"^[\x21-\x7e]{1,70}$")


@dataclass(frozen=True, slots=True)
class MaildirMessage:
    """A message found in ``new/`` or ``cur/``.

    ``key`` is the base name (stable across flag changes), ``uidl`` the POP3 unique id,
    ``size`` the wire size, ``flags`` the sorted flag letters, ``subdir`` ``"new"`` or
    ``"cur"``, ``filename`` the current file name in that directory.
    """

    key: str
    uidl: str
    size: int
    flags: str
    subdir: str
    filename: str


def uidl_for_key(key: str) -> str:
    """The RFC 1939 section 7 UIDL for a Maildir key (pure function, so it is stable).

    The key itself when it is a valid UIDL (1..70 octets of 0x21..0x7E): that is what
    Dovecot's POP3 server reports with ``pop3_uidl_format = %f``, so a site moving to
    Dovecot keeps its UIDLs and "leave mail on server" clients do not fetch everything
    again. Longer keys (long host names) get a 40-hex-digit digest of the key instead.
    """
    if _UIDL_RE.match(key):
        return key
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _sort_key(key: str) -> tuple[int, int, str]:
    m = _TIME_RE.match(key)
    if m is None:
        return (0, 0, key)
    return (int(m.group(1)), int(m.group(2) or 0), key)


def _split_name(filename: str) -> tuple[str, str]:
    """Return (key, flags) for a file name in new/ or cur/."""
    key, sep, info = filename.partition(":")
    flags = info[2:] if sep and info.startswith("2,") else ""
    return key, flags


class MaildirWriter:
    """Incremental delivery of one message: ``write(chunk)``... then ``commit()``.

    Made by :meth:`MaildirMailbox.open_writer`. Chunks may use CRLF or LF line ends and
    may split a CRLF anywhere. Nothing is visible to readers until :meth:`commit`
    returns; :meth:`abort` (or leaving the ``with`` block by an exception) removes the
    temporary file. Not thread-safe: one writer belongs to one session.

    ``crash_hook`` (tests only) is called with ``"before_fsync"``, ``"before_rename"`` and
    ``"before_dir_fsync"`` so a test can kill the process at each step.
    """

    __slots__ = ("_unique", "_tmp_path", "_new_dir", "_hook", "_file", "key")

    def __init__(
        self,
        mailbox: MaildirMailbox,
        unique: str,
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        self._unique = unique
        self._tmp_path = f"{mailbox.path}/tmp/{unique}"
        self._new_dir = f"{mailbox.path}/new"
        self._hook = crash_hook
        self._file = StagedFile(self._tmp_path)
        self.key: str | None = None

    @property
    def disk_size(self) -> int:
        """Octets written so far in the on-disk form (for size limits)."""
        return self._file.disk_size

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (any size, CRLF or LF line ends)."""
        self._file.write(chunk)

    def commit(self) -> str:
        """Make the message durable and visible in ``new/``; return its key.

        Order (DESIGN invariant 1): fsync the file, rename it into ``new/``, fsync
        ``new/``. Only when this returns may the caller acknowledge the message.
        """
        hook = self._hook
        if self._file.closed:
            raise RuntimeError("writer is closed")
        try:
            self._file.finish(hook)
        except BaseException:
            self.abort()
            raise
        file = self._file
        key = f"{self._unique},S={file.disk_size},W={file.wire_size}"
        _publish(self._tmp_path, self._new_dir, key, hook)
        self.key = key
        return key

    def abort(self) -> None:
        """Discard the message (nothing was visible). Idempotent."""
        if self._file.close():
            _unlink_quietly(self._tmp_path)

    def __enter__(self) -> MaildirWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self.key is None:
            self.abort()


def _publish(tmp_path: str, new_dir: str, key: str, hook: Callable[[str], None] | None) -> None:
    """Rename a durable ``tmp/`` file into ``new/`` under ``key`` and fsync ``new/``.

    Order (DESIGN invariant 1): the file was fsynced; rename it, then fsync the
    directory; only then may the caller acknowledge the message. On failure nothing
    stays, neither the temporary file nor the renamed one.
    """
    new_path = f"{new_dir}/{key}"
    renamed = False
    try:
        if hook:
            hook("before_rename")
        os.rename(tmp_path, new_path)
        renamed = True
        if hook:
            hook("before_dir_fsync")
        fsync_dir(new_dir)
    except BaseException:
        # The caller will answer "not accepted" (451): take back what the rename made
        # visible, or a retry by the client would deliver a duplicate.
        _unlink_quietly(new_path if renamed else tmp_path)
        raise


def _unlink_quietly(path: str) -> None:
    # Cleanup after a failure: the caller is already raising the error that matters
    # (ENOSPC, EIO...), which must reach the client's reply and the log, not one from
    # this unlink on the same sick disk. A tmp/ file left behind is never visible and
    # clean_tmp removes it later; a message left in new/ after a failed directory fsync
    # may be delivered twice by the client's retry, the safe side of losing none.
    try:
        os.unlink(path)
    except OSError:
        pass


class MaildirMailbox:
    """One Maildir folder.

    ``MaildirMailbox(path)`` creates ``tmp/ new/ cur/`` when missing (``create=False``
    raises :class:`FileNotFoundError` instead). The object holds no open files and may
    be shared by threads; several processes may deliver into the same folder at once.
    A long-lived object is cheaper to deliver with than a new one per message (its
    namer, and no directory checks per delivery); if the folder disappears meanwhile,
    :meth:`open_writer` makes it again (unless ``create=False``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        namer: UniqueNamer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._namer = namer if namer is not None else UniqueNamer(clock=clock)
        self._clock = clock
        self._create_missing = create
        if create:
            self._create()
        elif not all(os.path.isdir(os.path.join(self._path, d)) for d in ("tmp", "new", "cur")):
            # errno and filename set, so describe() and str() both name the folder.
            raise FileNotFoundError(errno.ENOENT, "not a Maildir", self._path)

    def _create(self) -> None:
        made = False
        parent = os.path.dirname(self._path)
        if not os.path.isdir(self._path):
            os.makedirs(self._path, mode=0o700, exist_ok=True)
            fsync_dir(parent)
            made = True
        for sub in ("tmp", "new", "cur"):
            p = os.path.join(self._path, sub)
            if not os.path.isdir(p):
                try:
                    os.mkdir(p, 0o700)
                except FileExistsError:
                    pass
                made = True
        if made:
            fsync_dir(self._path)

    @property
    def path(self) -> str:
        """Absolute path of the Maildir root."""
        return self._path

    # -- delivery ------------------------------------------------------------------------

    def open_writer(self, crash_hook: Callable[[str], None] | None = None) -> MaildirWriter:
        """Start an incremental delivery (see :class:`MaildirWriter`)."""
        try:
            return MaildirWriter(self, self._namer.new_name(), crash_hook)
        except FileNotFoundError:
            # tmp/ (or the whole folder) was removed since this object checked it, e.g.
            # by an administrator while the server kept this object: make it again.
            if not self._create_missing:
                raise
            self._create()
            return MaildirWriter(self, self._namer.new_name(), crash_hook)

    def deliver_bytes(self, data: bytes, crash_hook: Callable[[str], None] | None = None) -> str:
        """Deliver a whole message held in memory (CRLF or LF line ends) with one
        ``write``; return its key once it is durable, exactly as :meth:`deliver` does.

        For small messages: a writer's streaming machinery costs more than the message.
        """
        out, wire_size = disk_form(data)
        unique = self._namer.new_name()
        tmp_path = f"{self._path}/tmp/{unique}"
        try:
            write_new_file(tmp_path, out, crash_hook)
        except FileNotFoundError:
            if not self._create_missing:
                raise
            self._create()  # see open_writer
            unique = self._namer.new_name()
            tmp_path = f"{self._path}/tmp/{unique}"
            write_new_file(tmp_path, out, crash_hook)
        key = f"{unique},S={len(out)},W={wire_size}"
        _publish(tmp_path, f"{self._path}/new", key, crash_hook)
        return key

    def deliver(
        self, chunks: Iterable[bytes], crash_hook: Callable[[str], None] | None = None
    ) -> str:
        """Deliver a message from a (sync) iterable of byte chunks; return its key once
        it is durable (file and directory fsynced). An exception from ``chunks`` aborts
        the delivery and leaves nothing behind."""
        if isinstance(chunks, (list, tuple)) and sum(map(len, chunks)) <= _WHOLE_MAX:
            return self.deliver_bytes(b"".join(chunks), crash_hook)  # already in memory
        with self.open_writer(crash_hook) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    # -- listing -------------------------------------------------------------------------

    def list_messages(self) -> list[MaildirMessage]:
        """Every message in ``new/`` and ``cur/``, oldest delivery first.

        Wire sizes come from ``,W=`` in the name or from the size cache; only files
        that have neither are read (once). Hidden files (``.``) are ignored, as the
        Maildir specification asks.
        """
        found: list[tuple[str, str, str]] = []  # (subdir, filename, key)
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(self._path, sub))
            except FileNotFoundError:
                continue
            for name in names:
                if not name.startswith("."):
                    found.append((sub, name, _split_name(name)[0]))
        cache: dict[str, int] | None = None
        cache_dirty = False
        out: list[MaildirMessage] = []
        seen: set[str] = set()
        for sub, name, key in found:
            if key in seen:
                # Mid-rename by a MUA (new/ -> cur/): the file is listed twice; keep one.
                continue
            seen.add(key)
            flags = _split_name(name)[1]
            m = _WIRE_RE.search(key)
            if m is not None:
                size = int(m.group(1))
            else:
                if cache is None:
                    cache = self._load_size_cache()
                cached = cache.get(key)
                if cached is None:
                    computed = self._measure(sub, name, key)
                    if computed is None:
                        continue  # vanished meanwhile
                    cache[key] = cached = computed
                    cache_dirty = True
                size = cached
            out.append(MaildirMessage(key, uidl_for_key(key), size, flags, sub, name))
        if cache is not None:
            stale = set(cache) - seen
            for key in stale:
                del cache[key]
            if cache_dirty or stale:
                self._save_size_cache(cache)
        out.sort(key=lambda msg: _sort_key(msg.key))
        return out

    def _measure(self, sub: str, name: str, key: str) -> int | None:
        try:
            f = open(os.path.join(self._path, sub, name), "rb")
        except FileNotFoundError:
            located = self._locate(key)
            if located is None:
                return None
            f = open(located, "rb")
        with f:
            return measure_wire_size(f)

    def _load_size_cache(self) -> dict[str, int]:
        try:
            with open(os.path.join(self._path, _SIZE_CACHE_NAME), "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int)}

    def _save_size_cache(self, cache: dict[str, int]) -> None:
        data = json.dumps(cache, sort_keys=True).encode()
        try:
            atomic_write(
                os.path.join(self._path, _SIZE_CACHE_NAME),
                data,
                tmp_suffix=self._namer.new_name(),
            )
        except OSError:
            pass  # only a cache: next listing measures again

    def _locate(self, key: str) -> str | None:
        """Current path of ``key`` (its name changes when a MUA sets flags)."""
        for sub in ("cur", "new"):
            d = os.path.join(self._path, sub)
            # Fast paths: the bare key (new/) and the common ":2,..." names are tried via
            # a directory scan only when the direct stat misses.
            direct = os.path.join(d, key)
            if os.path.exists(direct):
                return direct
            try:
                with os.scandir(d) as it:
                    for entry in it:
                        if _split_name(entry.name)[0] == key:
                            return entry.path
            except FileNotFoundError:
                continue
        return None

    def get(self, key: str) -> MaildirMessage | None:
        """The message with ``key``, or None."""
        path = self._locate(key)
        if path is None:
            return None
        sub = os.path.basename(os.path.dirname(path))
        name = os.path.basename(path)
        flags = _split_name(name)[1]
        m = _WIRE_RE.search(key)
        size = int(m.group(1)) if m else self._measure(sub, name, key)
        if size is None:
            return None
        return MaildirMessage(key, uidl_for_key(key), size, flags, sub, name)

    # -- reading -------------------------------------------------------------------------

    def open_message(self, key: str, hint: MaildirMessage | None = None) -> BinaryIO:
        """Open a message for streaming (on-disk LF form). Raises :class:`MessageGone`."""
        if hint is not None:
            try:
                return open(os.path.join(self._path, hint.subdir, hint.filename), "rb")
            except FileNotFoundError:
                pass
        for _ in range(3):
            path = self._locate(key)
            if path is None:
                break
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue  # renamed between locate and open (flags changed): retry
        raise MessageGone(key)

    def wire_chunks(self, key: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """Stream a message as CRLF wire bytes (no dot-stuffing)."""
        with self.open_message(key) as f:
            yield from crlf_chunks(f, chunk_size)

    # -- flags ---------------------------------------------------------------------------

    def set_flags(self, key: str, flags: str) -> MaildirMessage:
        """Replace the flags of ``key`` (moving it to ``cur/``); return the new state.

        Flags are Maildir letters (``S`` seen, ``R`` replied, ``F`` flagged, ``T``
        trashed, ``D`` draft, ``P`` passed), stored sorted as the specification asks.
        """
        bad = set(flags) - VALID_FLAGS
        if bad:
            raise ValueError(f"unknown Maildir flags: {''.join(sorted(bad))}")
        info = "".join(sorted(set(flags)))
        for _ in range(3):
            src = self._locate(key)
            if src is None:
                raise MessageGone(key)
            name = f"{key}:2,{info}"
            dst_dir = os.path.join(self._path, "cur")
            dst = os.path.join(dst_dir, name)
            if src == dst:
                break
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                continue
            fsync_dir(dst_dir)
            src_dir = os.path.dirname(src)
            if src_dir != dst_dir:
                fsync_dir(src_dir)
            break
        else:
            raise MessageGone(key)
        msg = self.get(key)
        if msg is None:
            raise MessageGone(key)
        return msg

    def add_flags(self, key: str, flags: str) -> MaildirMessage:
        """Add flag letters to ``key`` (e.g. ``"S"`` after a POP3 RETR, if wanted)."""
        msg = self.get(key)
        if msg is None:
            raise MessageGone(key)
        return self.set_flags(key, msg.flags + flags)

    # -- deletion ------------------------------------------------------------------------

    def delete(self, keys: Iterable[str], hints: Mapping[str, MaildirMessage] | None = None) -> int:
        """Remove messages durably; return how many were removed by this call.

        ``hints`` (a listing's entries by key) give each file's last known name, so a
        POP3 QUIT deleting thousands of messages does not search ``cur/`` for each one;
        a file renamed since (a MUA changed its flags) is still found by a search.
        """
        removed = 0
        dirs: set[str] = set()
        for key in keys:
            hint = hints.get(key) if hints is not None else None
            if hint is not None:
                hinted = os.path.join(self._path, hint.subdir, hint.filename)
                try:
                    os.unlink(hinted)
                except FileNotFoundError:
                    pass
                else:
                    removed += 1
                    dirs.add(os.path.dirname(hinted))
                    continue
            for _ in range(3):
                path = self._locate(key)
                if path is None:
                    break
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed += 1
                dirs.add(os.path.dirname(path))
                break
        for d in dirs:
            fsync_dir(d)
        return removed

    def clean_tmp(self, max_age: float = _TMP_MAX_AGE) -> int:
        """Remove ``tmp/`` files older than ``max_age`` seconds (leftovers of crashes)."""
        now = self._clock()
        removed = 0
        tmp = os.path.join(self._path, "tmp")
        with os.scandir(tmp) as it:
            for entry in it:
                try:
                    if now - entry.stat().st_mtime > max_age:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    # -- POP3 ----------------------------------------------------------------------------

    def lock_path(self) -> str:
        """The session lock file (``nosend-pop3.lock`` in the Maildir root)."""
        return os.path.join(self._path, _LOCK_NAME)

    def pop3_session(self, timeout: float = 0.0) -> MaildirDropSession:
        """Lock the mailbox and snapshot it for one POP3 session.

        Raises :class:`LockBusy` when another session (this process or another) holds
        it for longer than ``timeout`` seconds; RFC 1939 section 4 then answers -ERR.
        """
        lock = FileLock(self.lock_path())
        if not lock.acquire(timeout):
            raise LockBusy(lock.path)
        try:
            listing = self.list_messages()
        except BaseException:
            lock.release()
            raise
        return MaildirDropSession(self, listing, lock)


class MaildirDropSession(DropSession):
    """A POP3 session's view of a Maildir (see :class:`nosend_store.drop.DropSession`)."""

    def __init__(
        self, mailbox: MaildirMailbox, listing: list[MaildirMessage], lock: FileLock
    ) -> None:
        super().__init__([DropMessage(i, m.uidl, m.size) for i, m in enumerate(listing, start=1)])
        self._mailbox = mailbox
        self._entries = listing
        self._lock = lock

    def entry(self, number: int) -> MaildirMessage:
        """The Maildir entry behind ``number`` (for flags, keys)."""
        return self._entries[number - 1]

    def _open(self, msg: DropMessage) -> BinaryIO:
        entry = self._entries[msg.number - 1]
        return self._mailbox.open_message(entry.key, hint=entry)

    def _apply_deletions(self, msgs: list[DropMessage]) -> None:
        entries = [self._entries[m.number - 1] for m in msgs]
        self._mailbox.delete((e.key for e in entries), hints={e.key: e for e in entries})

    def _apply_seen(self, msgs: list[DropMessage]) -> None:
        for m in msgs:
            entry = self._entries[m.number - 1]
            try:
                current = self._mailbox.get(entry.key)
                if current is not None and "S" not in current.flags:
                    self._mailbox.set_flags(entry.key, current.flags + "S")
            except MessageGone:
                continue  # removed by a MUA meanwhile: nothing to mark
            except OSError:
                # The seen flag is a courtesy to MUAs on the same Maildir; a folder that
                # cannot be written (read-only, full) must not fail the QUIT for it.
                return

    def _unlock(self) -> None:
        self._lock.release()
