"""Durable file primitives shared by the Maildir and the outbound queue.

Owns: directory fsync, writing a new file durably, atomic small-file replacement,
Maildir unique names, and the line-ending normaliser that turns received bytes (CRLF or
LF) into the LF-only form kept on disk while counting the POP3 wire size (streamed, or
for a whole message at once).

Must not: know about mailboxes, queues or protocols; hold process-global state (the
runner calls these from many threads at once, so every stateful helper is an object the
caller owns).

Wire size, the one definition used everywhere in ``nosend_store``: the number of octets
of the message with every line ending written as CRLF and a final CRLF added if the
message does not end with one, WITHOUT dot-stuffing and without the terminating
``.CRLF``. That is the "exact size of the message in octets" that LIST and STAT report
(RFC 1939 section 5), counted with the CRLF line ends the message has on the wire rather
than the local end-of-line convention (section 11), and what Dovecot stores as ``,W=``
in Maildir file names. Since the disk copy is LF-only, has no CR before an LF and always
ends with LF (see :class:`LineEndingNormaliser`), wire size == disk size + number of LFs.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .faults import name_path

__all__ = [
    "fsync_dir",
    "atomic_write",
    "write_new_file",
    "disk_form",
    "UniqueNamer",
    "LineEndingNormaliser",
    "StagedFile",
    "crlf_chunks",
    "measure_wire_size",
    "wire_size_of_disk_bytes",
]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a create, link, rename or unlink in it is durable.

    POSIX leaves a new directory entry volatile until the directory itself is synced;
    ext4/xfs honour fsync on a directory file descriptor.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise name_path(exc, path) from None
    finally:
        os.close(fd)


def write_new_file(path: str, data: bytes, crash_hook: Callable[[str], None] | None = None) -> None:
    """Create ``path`` (it must not exist yet), write ``data``, fsync and close it; on
    any failure remove it again.

    It never makes anything visible: the caller renames the file into place and fsyncs
    that directory afterwards. ``crash_hook("before_fsync")`` lets the crash tests kill
    the process between the write and the fsync.
    """
    # O_EXCL: unique names never collide, and an existing file is never reused.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        written = os.write(fd, data)
        if written < len(data):
            # A short write (a signal, a nearly full disk): carry on from where it stopped.
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view) :]
        if crash_hook:
            crash_hook("before_fsync")
        os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        _unlink_quietly(path)
        if isinstance(exc, OSError):
            name_path(exc, path)  # os.write and os.fsync name no file
        raise
    try:
        os.close(fd)
    except BaseException:
        _unlink_quietly(path)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, tmp_suffix: str) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never
    a mix, and the new one survives a crash once this returns.

    ``tmp_suffix`` must be unique among concurrent writers of the same ``path`` (pass a
    :meth:`UniqueNamer.new_name`); the temporary file lives next to ``path`` because
    ``rename`` is only atomic within one filesystem.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{tmp_suffix}"
    write_new_file(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    # Cleanup after a failure: the caller is already raising the error that matters
    # (ENOSPC, EIO...), which must reach the client's reply and the log, not one from
    # this unlink on the same sick disk. A file left behind is never visible to readers
    # (it is in tmp/, or taken for a crash leftover) and clean_tmp removes it later.
    try:
        os.unlink(path)
    except OSError:
        pass


def _maildir_hostname(raw: str) -> str:
    # Maildir specification (cr.yp.to/proto/maildir.html): "/" and ":" may not appear
    # in a file name part, so they are written as \057 and \072.
    out = raw.replace("/", "\\057").replace(":", "\\072")
    # Keep names printable ASCII without "," (our own ,S=/,W= field separator) so that
    # the name can serve as an RFC 1939 UIDL (0x21..0x7E).
    out = out.replace(",", "\\054")
    return "".join(c if 0x21 <= ord(c) <= 0x7E else f"\\{ord(c):03o}" for c in out) or "localhost"


class _ProcessId:
    """This process's id without a system call per name.

    ``os.getpid()`` asks the kernel every time (glibc stopped caching it in 2.25); a
    Maildir delivery needs it once per message. The value is read once and again in
    the child after every ``os.fork()`` (``os.register_at_fork``), so a forked worker
    never writes its parent's pid into a name. Process-wide by nature, immutable between
    forks, and safe to read from any thread.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = os.getpid()

    def refresh(self) -> None:
        self.value = os.getpid()


_PID = _ProcessId()
os.register_at_fork(after_in_child=_PID.refresh)

# Random parts are drawn from the kernel in batches: 4, 8, 16... up to this many names
# per getrandom() call, so a long-lived namer makes one system call per 512 names and a
# namer made for a single name draws no more than it uses.
_POOL_NAMES = 512


class UniqueNamer:
    """Produces Maildir unique names, safe across threads, processes and restarts.

    Format (Maildir specification, "modern" form used by qmail and Dovecot)::

        <seconds>.M<microseconds>P<pid>Q<counter>R<random>.<host>

    The pid is the current one (re-read after a fork), so a forked child never repeats
    its parent's names; the per-object counter separates names made in the same
    microsecond by one process; 32 random bits (from ``os.urandom``, drawn in batches,
    and afresh in a forked child) guard against pid reuse after a reboot with a clock
    set back. Keep one namer per mailbox or queue for the life of the process:
    construction looks up the host name, a system call.
    """

    __slots__ = ("_host", "_clock", "_counter", "_pool")

    def __init__(
        self,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = _maildir_hostname(hostname if hostname is not None else socket.gethostname())
        self._clock = clock
        # next() on an itertools.count is atomic under the GIL: no lock, so a fork while
        # another thread is naming cannot leave the child with a lock held forever.
        self._counter = itertools.count(1)
        # (pid it was drawn in, counter value of its first name, 8 hex digits per name)
        self._pool: tuple[int, int, str] = (0, 0, "")

    @property
    def host(self) -> str:
        """The hostname part, already escaped for a Maildir file name."""
        return self._host

    def new_name(self) -> str:
        """Return a fresh unique name (no ``,S=``/``:2,`` suffix)."""
        counter = next(self._counter)
        pid = _PID.value
        drawn_in, first, digits = self._pool
        slot = 8 * (counter - first)
        if drawn_in != pid or not 0 <= slot < len(digits):
            names = min(max(len(digits) // 4, 4), _POOL_NAMES)
            digits = os.urandom(4 * names).hex()
            slot = 0
            # Replaced whole (one reference store): a thread racing this one uses either
            # pool; at worst two names share random bits, never a counter value.
            self._pool = (pid, counter, digits)
        now = self._clock()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        # Six digits: then the names sort as strings in the order they were made, as
        # mutt, scripts and `ls` sort them (M99999 would sort after M100000).
        return f"{seconds}.M{micros:06d}P{pid}Q{counter}R{digits[slot : slot + 8]}.{self._host}"


_CR_BEFORE_LF = re.compile(rb"\r+\n")


class LineEndingNormaliser:
    """Streams received message bytes into the on-disk LF-only form.

    Rules (the disk form then never holds a CR right before an LF, nor a trailing CR):

    * CRLF becomes LF; a bare LF stays;
    * a CR immediately before a line end is part of that line end (``a\\r\\r\\n`` is
      the line ``a``): RFC 5321 section 2.3.8 forbids bare CRs, and keeping one there
      would make the file's line end ambiguous to every reader (Dovecot and the POP3
      encoder both take CR LF on disk as one line end);
    * any other CR is kept, one octet;
    * the message ends with LF: if it is non-empty and does not, an LF is added (a
      trailing CR counts as the cut-short line end).

    CRs at the end of a chunk are held back until the next chunk shows what follows,
    so chunk boundaries never change the result. Counts: ``disk_size`` and
    ``wire_size`` (see the module docstring).
    """

    __slots__ = ("_pending_cr", "_last", "disk_size", "newlines")

    def __init__(self) -> None:
        self._pending_cr = 0
        self._last = b""
        #: Octets emitted so far.
        self.disk_size = 0
        #: LF octets emitted so far.
        self.newlines = 0

    @property
    def wire_size(self) -> int:
        """Wire size of what has been emitted (exact once :meth:`finish` was called)."""
        return self.disk_size + self.newlines

    def feed(self, chunk: bytes) -> bytes:
        """Return the disk bytes for ``chunk`` (possibly empty)."""
        if not chunk:
            return b""
        if self._pending_cr:
            chunk = b"\r" * self._pending_cr + chunk
        if chunk[-1] == 0x0D:
            stripped = chunk.rstrip(b"\r")
            self._pending_cr = len(chunk) - len(stripped)
            chunk = stripped
        else:
            self._pending_cr = 0
        if b"\r" in chunk:
            # CRLF -> LF by split and join: a third faster than bytes.replace for mail's
            # long lines, and far cheaper than a regex, which only runs for the rare CR
            # runs left before an LF (a stray CR right before CRLF). Looking for a CR
            # first (memchr) is cheaper than searching for CRLF in a CR-free result.
            chunk = b"\n".join(chunk.split(b"\r\n"))
            if b"\r" in chunk and b"\r\n" in chunk:
                chunk = _CR_BEFORE_LF.sub(b"\n", chunk)
        if chunk:
            self.disk_size += len(chunk)
            self.newlines += chunk.count(b"\n")
            self._last = chunk[-1:]
        return chunk

    def finish(self) -> bytes:
        """Return the last disk bytes: the missing final LF, if any."""
        held, self._pending_cr = self._pending_cr, 0
        if held or (self.disk_size and self._last != b"\n"):
            return self._count(b"\n")
        return b""

    def _count(self, out: bytes) -> bytes:
        if out:
            self.disk_size += len(out)
            self.newlines += out.count(b"\n")
            self._last = out[-1:]
        return out


def disk_form(data: bytes) -> tuple[bytes, int]:
    """A whole message (CRLF or LF line ends) in the on-disk form, with its wire size:
    what a fresh :class:`LineEndingNormaliser` fed ``data`` and finished gives, in fewer
    steps for the usual message, whose CRs all belong to CRLFs."""
    if type(data) is not bytes:
        data = bytes(data)  # never extend or hand back the caller's buffer
    out = data
    if b"\r" in out:
        out = b"\n".join(out.split(b"\r\n"))
        if b"\r" in out:
            # A CR outside a CRLF: the normaliser's rules decide what it becomes.
            norm = LineEndingNormaliser()
            out = norm.feed(data) + norm.finish()
            return out, norm.wire_size
    if out and out[-1] != 0x0A:
        out += b"\n"
    return out, len(out) + out.count(b"\n")


class StagedFile:
    """A message being written into a new staging file, as Maildir delivery and enqueue
    both do: chunks in any line-end form are normalised to the disk form as they arrive
    and written in batches; :meth:`finish` flushes, fsyncs and closes. It never makes
    anything visible: its owner renames the file (or its folder) into place afterwards.
    """

    _BATCH = 256 * 1024  # fewer, larger writes; bounded memory per message
    _MAX_PIECES = 256  # well under IOV_MAX (1024 on Linux) for one writev

    __slots__ = ("_norm", "_fd", "_pending", "_pending_size", "path")

    def __init__(self, path: str) -> None:
        #: The staging file (named in the errors of writes and fsyncs).
        self.path = path
        self._norm = LineEndingNormaliser()
        # O_EXCL: unique names never collide, and an existing file is never reused.
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        # Normalised pieces not yet written: kept as they are and written with one
        # writev, so a small message is never copied into a staging buffer.
        self._pending: list[bytes] = []
        self._pending_size = 0

    @property
    def closed(self) -> bool:
        """True once finished or closed."""
        return self._fd is None

    @property
    def disk_size(self) -> int:
        """Octets in the on-disk form so far."""
        return self._norm.disk_size

    @property
    def wire_size(self) -> int:
        """Octets as POP3 RETR sends them (CRLF line ends), once finished."""
        return self._norm.wire_size

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (any size, CRLF or LF line ends)."""
        if self._fd is None:
            raise RuntimeError("writer is closed")
        out = self._norm.feed(chunk)
        if out:
            if type(out) is not bytes:
                out = bytes(out)  # held until flushed: the caller may reuse its buffer
            self._pending.append(out)
            self._pending_size += len(out)
            if self._pending_size >= self._BATCH or len(self._pending) >= self._MAX_PIECES:
                self._flush()

    def finish(self, crash_hook: Callable[[str], None] | None = None) -> None:
        """Write what is left, fsync and close. ``crash_hook("before_fsync")`` lets the
        crash tests kill the process between the last write and the fsync."""
        if self._fd is None:
            raise RuntimeError("writer is closed")
        tail = self._norm.finish()
        if tail:
            self._pending.append(tail)
            self._pending_size += len(tail)
        self._flush()
        if crash_hook:
            crash_hook("before_fsync")
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise name_path(exc, self.path) from None
        self.close()

    def close(self) -> bool:
        """Close without finishing; True if it was still open. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return False
        self._pending = []
        os.close(fd)
        return True

    def _flush(self) -> None:
        fd = self._fd
        assert fd is not None
        pieces = self._pending
        if not pieces:
            return
        size = self._pending_size
        try:
            written = os.write(fd, pieces[0]) if len(pieces) == 1 else os.writev(fd, pieces)
            if written < size:
                # A short write (a signal, a nearly full disk): carry on from where it
                # stopped.
                view = memoryview(b"".join(pieces))[written:]
                while view:
                    view = view[os.write(fd, view) :]
                del view
        except OSError as exc:
            raise name_path(exc, self.path) from None
        pieces.clear()
        self._pending_size = 0


def crlf_chunks(fileobj: BinaryIO, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield a stored message as CRLF wire bytes, in chunks of bounded size.

    For our own files (LF only, ending with LF, no CR before LF) every LF simply becomes
    CRLF. A file another program wrote may hold CRLF or lack the final newline; it goes
    through :class:`LineEndingNormaliser` first, so the octets yielded always add up to
    :func:`measure_wire_size` of the file.
    """
    norm = LineEndingNormaliser()
    while data := fileobj.read(chunk_size):
        out = norm.feed(data)
        if out:
            yield out.replace(b"\n", b"\r\n")
    tail = norm.finish()
    if tail:
        yield tail.replace(b"\n", b"\r\n")


def measure_wire_size(fileobj: BinaryIO, chunk_size: int = 256 * 1024) -> int:
    """Wire size of a stored message by reading it (for files without ``,W=``)."""
    norm = LineEndingNormaliser()
    while data := fileobj.read(chunk_size):
        norm.feed(data)
    norm.finish()
    return norm.wire_size


def wire_size_of_disk_bytes(data: bytes) -> int:
    """Wire size of an LF-only message held in memory (used for small generated parts)."""
    return len(data) + data.count(b"\n")
