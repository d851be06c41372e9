"""Streaming one received message into local Maildirs and the outbound queue.

Owns: :class:`MessageSink`, which takes the body of one SMTP transaction chunk by chunk
and writes it, with our ``Received:`` trace header in front (RFC 5321 section 4.4, and
``Return-Path:`` in front of that in local copies, which are final delivery), to
one temporary file per local mailbox and one queue entry for all remote recipients; it
watches the header block as it streams past (bounded: at most :data:`MAX_HEADER_BLOCK`
octets are held back), so that on the submission service ``Date:`` and ``Message-ID:``
are added when missing (RFC 6409 section 8.2, 8.3) and the Message-ID can be logged.

Commit is all or nothing as far as the client can tell: every copy is made durable
(file fsynced, linked into ``new/`` or renamed into ``active/``, directory fsynced) before
:meth:`MessageSink.commit` returns, and only then may the session reply 250 (DESIGN
invariant 1). If any copy fails, the copies already committed are deleted again and the
error is raised (naming its file), so the session replies 451 4.3.0 (452 4.3.1 when the
disk is full) and the client's retry does not leave duplicates.

Must not: speak SMTP, decide who may receive (policy did that at RCPT time), or hold a
whole message in memory. Every method except the constructor does blocking file work:
call it through ``ctx.run_blocking``. One sink belongs to one session.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nosend_runners.mail.per_config import PerConfig
from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox, MaildirWriter
from nosend_store.queue import Envelope, OutboundQueue, QueueWriter, Recipient

__all__ = [
    "MAX_HEADER_BLOCK",
    "HeaderTooLarge",
    "Delivered",
    "MessageSink",
    "deliver_notification",
]

#: Octets of header block held back while looking for Date:/Message-ID:. On submission a
#: longer header block is refused (552 5.3.4); elsewhere it is passed through unscanned.
MAX_HEADER_BLOCK = 256 * 1024

# Complete lines that keep the header block going, from where the scan stopped: a field
# (RFC 5322 section 2.2; field-name = 1*ftext, ftext = %d33-57 / %d59-126, then ":",
# section 3.6.8) or a folded continuation (section 2.2.3). The block ends at the first
# complete line that is neither: the empty line (section 2.1) or the body's first line.
_HEADER_LINES = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]++[ \t]*+:[^\n]*+\n|[ \t][^\n]*+\n)*+")
# The fields the sink cares about, in a span _HEADER_LINES took: at its start, and after
# each LF in it. Anchoring on the LF itself (not ^ with MULTILINE) lets the regex engine
# jump from LF to LF instead of trying every position: 1.5 us instead of 6 us for a
# typical 1 KB header.
_WANTED = rb"(?:(date)|message-id)[ \t]*:([^\n]*)"
_WANTED_FIRST = re.compile(_WANTED, re.IGNORECASE)
_WANTED_NEXT = re.compile(rb"\n" + _WANTED, re.IGNORECASE)


class _Kept:
    """What this module keeps per configuration (see :mod:`nosend_runners.mail.per_config`):
    one Maildir object per mailbox and one queue object per host name, reused by every
    message, so a delivery does not look up the host, check directories or build paths
    again."""

    __slots__ = ("maildirs", "queues")

    def __init__(self, config: Config) -> None:
        self.maildirs: dict[str, MaildirMailbox] = {}
        self.queues: dict[str | None, OutboundQueue] = {}


_KEPT: PerConfig[_Kept] = PerConfig(_Kept)


def _maildir(config: Config, name: str) -> MaildirMailbox:
    boxes = _KEPT.get(config).maildirs
    box = boxes.get(name)
    if box is None:
        # Creates tmp/ new/ cur/ if missing; MaildirMailbox.open_writer makes them again
        # should they disappear while this object is kept.
        box = boxes.setdefault(name, MaildirMailbox(config.maildir_path(name)))
    return box


def _forget(config: Config, mailboxes: Sequence[str], hostname: str | None) -> None:
    """Drop the kept objects a failed message used, after a FileNotFoundError: part of a
    folder went away (new/, the queue's active/), and a fresh object makes it again for
    the next message, as building one per message used to."""
    kept = _KEPT.get(config)
    for name in mailboxes:
        kept.maildirs.pop(name, None)
    kept.queues.pop(hostname, None)


def _open_queue_writer(config: Config, hostname: str | None, envelope: Envelope) -> QueueWriter:
    queues = _KEPT.get(config).queues
    queue = queues.get(hostname)
    if queue is None:
        queue = queues.setdefault(
            hostname, OutboundQueue(config.server.queue_dir, hostname=hostname)
        )
    try:
        return queue.open_writer(envelope)
    except FileNotFoundError:
        # The queue directory went away since it was checked: a fresh object makes it.
        queue = queues[hostname] = OutboundQueue(config.server.queue_dir, hostname=hostname)
        return queue.open_writer(envelope)


class HeaderTooLarge(Exception):
    """A submitted message's header block exceeded :data:`MAX_HEADER_BLOCK`."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a committed message went: Maildir keys by mailbox and the queue id."""

    keys: dict[str, str]
    queue_id: str | None
    size: int
    message_id: str | None


class MessageSink:
    """One message on its way to disk (see the module docstring).

    ``mailboxes``: local mailbox names (each gets one copy, duplicates removed);
    ``remote``: recipients for the outbound queue, with ``sender`` and the DSN/body
    parameters in ``envelope``. ``trace`` is the ``Received:`` field to put first.
    ``date`` and ``message_id`` are the fields to add when the message lacks them
    (``None``: never add, the relay/delivery case). ``return_path`` (the envelope
    sender, ``""`` for ``<>``) is written first into the local copies only.

    A message whose header block and body arrive in one piece (the usual small message,
    given to :meth:`finish`) is written with one ``write`` per copy.
    """

    __slots__ = (
        "_config",
        "_mailboxes",
        "_envelope",
        "_trace",
        "_date",
        "_message_id",
        "_hostname",
        "_return_path",
        "_must_scan",
        "_maildir",
        "_queue_writer",
        "_lead",
        "_header",
        "_scan_from",
        "_in_header",
        "_has_date",
        "_has_message_id",
        "_size",
        "_closed",
        "_opened",
        "message_id",
    )

    def __init__(
        self,
        config: Config,
        *,
        mailboxes: Sequence[str],
        envelope: Envelope | None,
        trace: bytes,
        date: bytes | None = None,
        message_id: bytes | None = None,
        return_path: str | None = None,
        hostname: str | None = None,
    ) -> None:
        self._config = config
        self._mailboxes = tuple(dict.fromkeys(mailboxes))
        self._envelope = envelope if envelope is not None and envelope.recipients else None
        if not self._mailboxes and self._envelope is None:
            raise ValueError("a message needs a mailbox or a remote recipient")
        self._trace = trace
        self._date = date
        self._message_id = message_id
        self._hostname = hostname
        self._return_path = return_path
        self._must_scan = date is not None or message_id is not None
        self._maildir: list[tuple[str, MaildirMailbox, MaildirWriter]] = []
        self._queue_writer: QueueWriter | None = None
        # Written in front of the first data of the local copies only (Return-Path:).
        self._lead = b""
        # Held back until the header block ends: the first chunk as it came, a copy
        # once a second one is appended.
        self._header: bytes | bytearray = b""
        self._scan_from = 0
        self._in_header = True
        self._has_date = False
        self._has_message_id = False
        self._size = 0
        self._closed = False
        self._opened = False
        #: The message's own Message-ID (as seen in its header), for the log.
        self.message_id: str | None = None

    # -- writing -----------------------------------------------------------------------

    def open(self) -> None:
        """Create the temporary files (a Maildir file per mailbox, one queue entry).

        Optional: the first :meth:`write` or :meth:`commit` opens them, so that a small
        message costs the caller a single blocking call.
        """
        if self._opened:
            return
        if self._closed:
            raise RuntimeError("sink is closed")
        self._opened = True
        try:
            config = self._config
            for name in self._mailboxes:
                box = _maildir(config, name)
                self._maildir.append((name, box, box.open_writer()))
            if self._mailboxes:
                self._lead = self._return_path_field()
            if self._envelope is not None:
                self._queue_writer = _open_queue_writer(config, self._hostname, self._envelope)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, FileNotFoundError):
                _forget(self._config, self._mailboxes, self._hostname)
            raise

    def _return_path_field(self) -> bytes:
        # RFC 5321 section 4.4: final delivery inserts the return path; the queued copy
        # is not final delivery and gets none.
        if self._return_path is None:
            return b""
        line = f"Return-Path: <{self._return_path}>\r\n"
        return line.encode("utf-8", "surrogateescape")

    def _emit(self, data: bytes) -> None:
        lead = self._lead
        if lead:
            self._lead = b""
            local = lead + data
        else:
            local = data
        if local:
            for _, _, writer in self._maildir:
                writer.write(local)
        if data and self._queue_writer is not None:
            self._queue_writer.write(data)

    def write(self, chunk: bytes) -> None:
        """Append the next piece of the body (CRLF line ends, as the engine gives it)."""
        if self._closed:
            raise RuntimeError("sink is closed")
        if not self._opened:
            self.open()
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # kept or passed on: never a buffer the caller reuses
        self._size += len(chunk)
        if not self._in_header:
            self._emit(chunk)
            return
        header = self._header
        if not header:
            self._header = header = chunk
        elif type(header) is bytearray:
            header += chunk
        else:
            self._header = header = bytearray(header)
            header += chunk
        end = self._scan_header()
        if end is not None:
            self._finish_header(end)
        elif len(header) > MAX_HEADER_BLOCK:
            if self._must_scan:
                raise HeaderTooLarge(f"header block over {MAX_HEADER_BLOCK} octets")
            self._finish_header(len(header), separator=False)

    def _scan_header(self) -> int | None:
        """Scan complete new header lines; return where the header block ends, if seen."""
        buf = self._header
        start = self._scan_from
        match = _HEADER_LINES.match(buf, start)
        end = match.end() if match is not None else start
        if end > start:
            # Every line from `start` on is complete, so buf[start - 1] is an LF.
            if start == 0:
                first = _WANTED_FIRST.match(buf, 0, end)
                if first is not None:
                    self._note_field(first)
            for field in _WANTED_NEXT.finditer(buf, max(start - 1, 0), end):
                self._note_field(field)
            self._scan_from = end
        # The line at `end` ends the block once it is complete (it is not a field).
        return end if buf.find(b"\n", end) >= 0 else None

    def _note_field(self, field: re.Match[bytes]) -> None:
        if field.group(1) is not None:
            self._has_date = True
        else:
            self._has_message_id = True
            value = field.group(2).strip().decode("utf-8", "replace")
            self.message_id = value[:200] or None

    def _finish_header(self, end: int, *, separator: bool = True) -> None:
        self._emit(self._take_header(end, separator))

    def _take_header(self, end: int, separator: bool = True) -> bytes:
        """What goes out for the held-back header (it ends at ``end``): our fields in
        front, the header, and the body that followed it in the same chunks."""
        header = self._header
        self._header = b""
        self._in_header = False
        parts: list[bytes | bytearray] = [self._trace]
        added = False
        if self._date is not None and not self._has_date:
            parts.append(self._date)  # RFC 6409 section 8.3
            added = True
        if self._message_id is not None and not self._has_message_id:
            parts.append(self._message_id)  # RFC 6409 section 8.3
            added = True
        if not added:
            parts.append(header)
        else:
            rest = header[end:]
            parts.append(header[:end])
            if separator and rest and rest[:2] != b"\r\n" and rest[:1] != b"\n":
                # The message had no header/body separator: our fields must not turn its
                # first body line into a header continuation.
                parts.append(b"\r\n")
            parts.append(rest)
        return b"".join(parts)

    # -- the end -----------------------------------------------------------------------

    def commit(self) -> Delivered:
        """Make every copy durable; return where they are. On failure nothing stays."""
        if self._closed:
            raise RuntimeError("sink is closed")
        if not self._opened:
            self.open()
        done: list[tuple[MaildirMailbox, str]] = []
        try:
            if self._in_header:
                self._finish_header(len(self._header))
            if self._lead:
                self._emit(b"")  # an empty message still gets its Return-Path:
            keys: dict[str, str] = {}
            for name, box, writer in self._maildir:
                key = writer.commit()
                done.append((box, key))
                keys[name] = key
            queue_id = self._queue_writer.commit() if self._queue_writer is not None else None
        except BaseException as exc:
            self._take_back(done, exc)
            raise
        self._closed = True
        return Delivered(keys, queue_id, self._size, self.message_id)

    def finish(self, chunk: bytes = b"") -> Delivered:
        """:meth:`write` the last ``chunk``, then :meth:`commit`: one blocking call."""
        if not self._opened and not self._closed:
            return self._deliver_whole(chunk)
        try:
            if chunk:
                self.write(chunk)
        except BaseException:
            self.abort()
            raise
        return self.commit()

    def _deliver_whole(self, chunk: bytes) -> Delivered:
        """:meth:`finish` for a message given in one piece (the usual small message):
        each local copy is written with one ``write`` and made durable in turn
        (:meth:`MaildirMailbox.deliver_bytes`), then the queue entry; the same steps,
        order and all-or-nothing outcome as :meth:`commit`, without temporary files
        to stream into."""
        self._opened = True
        done: list[tuple[MaildirMailbox, str]] = []
        try:
            if type(chunk) is not bytes:
                chunk = bytes(chunk)
            self._size = len(chunk)
            self._header = chunk
            end = self._scan_header()
            if end is None:
                if self._must_scan and len(chunk) > MAX_HEADER_BLOCK:
                    raise HeaderTooLarge(f"header block over {MAX_HEADER_BLOCK} octets")
                end = len(chunk)  # the header never ended: all of it is header
            data = self._take_header(end)
            keys: dict[str, str] = {}
            if self._mailboxes:
                local = self._return_path_field() + data
                config = self._config
                for name in self._mailboxes:
                    box = _maildir(config, name)
                    key = box.deliver_bytes(local)
                    done.append((box, key))
                    keys[name] = key
            queue_id = None
            if self._envelope is not None:
                writer = _open_queue_writer(self._config, self._hostname, self._envelope)
                self._queue_writer = writer
                writer.write(data)
                queue_id = writer.commit()
        except BaseException as exc:
            self._take_back(done, exc)
            raise
        self._closed = True
        return Delivered(keys, queue_id, self._size, self.message_id)

    def _take_back(self, done: list[tuple[MaildirMailbox, str]], exc: BaseException) -> None:
        # The client will be told 451 (or 452) and retry: what was already visible must go.
        for box, key in done:
            try:
                box.delete([key])
            except OSError:
                pass
        self.abort()
        if isinstance(exc, FileNotFoundError):
            _forget(self._config, self._mailboxes, self._hostname)

    def abort(self) -> None:
        """Discard every uncommitted copy (idempotent)."""
        self._closed = True
        for _, _, writer in self._maildir:
            writer.abort()
        if self._queue_writer is not None:
            self._queue_writer.abort()
        self._header = b""

    @property
    def size(self) -> int:
        """Octets of body received so far (without our added fields)."""
        return self._size

    @staticmethod
    def recipients(addresses: Sequence[Recipient]) -> tuple[Recipient, ...]:
        """Remote recipients with duplicates (same address) removed, order kept."""
        seen: dict[str, Recipient] = {}
        for r in addresses:
            seen.setdefault(r.address, r)
        return tuple(seen.values())


def deliver_notification(
    config: Config, recipient: str, chunks: Iterable[bytes], *, hostname: str | None = None
) -> Delivered:
    """Deliver a notification (envelope sender ``<>``) to ``recipient``, durably.

    Local addresses go to their Maildirs, others to the outbound queue with
    ``NOTIFY=NEVER`` (RFC 3461 section 5.2: no report about a report). Usable as the
    queue's ``bounce_sink``. Raises ``LookupError`` for an unknown local address.
    Blocking.
    """
    resolution = config.resolve(recipient)
    if resolution is None:
        raise LookupError("notification recipient is not a known local address")
    remote = tuple(Recipient(a, notify=("NEVER",)) for a in resolution.remote)
    sink = MessageSink(
        config,
        mailboxes=resolution.mailboxes,
        envelope=Envelope("", remote) if remote else None,
        trace=b"",
        return_path="",
        hostname=hostname,
    )
    sink.open()
    try:
        for chunk in chunks:
            sink.write(chunk)
    except BaseException:
        sink.abort()
        raise
    return sink.commit()
