"""The outbound queue: messages waiting for a link, with their envelopes.

Owns: :class:`OutboundQueue` (durable enqueue from a chunk stream, listing, claims,
per-recipient results, retry schedule, expiry and delivery status notifications) and
the value types :class:`Envelope`, :class:`Recipient`, :class:`QueueEntry`,
:class:`RecipientResult`, :class:`RetryPolicy`.

Layout under the queue root::

    tmp/<id>/            staging; a crash leaves only garbage here
    active/<id>/message  the message, LF line ends, ends with LF (like a Maildir file)
    active/<id>/envelope.json
    active/<id>/lock     flock'ed by whoever holds the claim

Enqueue writes ``message`` and ``envelope.json`` in ``tmp/<id>/``, fsyncs both and the
directory, renames the directory into ``active/`` and fsyncs ``active/``: the rename is
the single commit point, so a reader sees a whole entry or none (DESIGN invariant 1).
``envelope.json`` is later replaced atomically (write, fsync, rename, fsync).

Claims: a transport (or the POP3 queue drop) ``claim()``s an entry, which takes an
exclusive ``flock`` on its ``lock`` file — two transports never send the same message,
and a crashed transport's claim vanishes with its process. A message leaves the queue
only through a claim whose every recipient is done (DESIGN invariant 3), after the
delivery status notification, if any, was handed durably to ``bounce_sink``.

Times are POSIX seconds taken from the injectable ``clock`` unless passed in. They are
wall-clock times because they outlive the process; a clock that jumps must not stall
the queue: a next attempt further ahead than the longest retry interval is due at once,
and an arrival time ahead of the clock is moved to now, so that expiry still comes.

Must not: speak SMTP, pick links, or look up local mailboxes (``bounce_sink`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, BinaryIO, Literal

from ._durable import (
    StagedFile,
    UniqueNamer,
    atomic_write,
    crlf_chunks,
    fsync_dir,
)
from .dsn import DsnRecipient, build_dsn, status_from_reply
from .faults import name_path
from .locks import FileLock
from .maildir import MaildirMailbox

__all__ = [
    "Recipient",
    "Envelope",
    "RecipientResult",
    "RetryPolicy",
    "QueueEntry",
    "OutboundQueue",
    "QueueWriter",
    "QueueClaim",
    "FinishOutcome",
    "BounceSink",
    "MaildirBounceSink",
]

RecipientState = Literal["pending", "delivered", "failed"]

#: ``bounce_sink(recipient, chunks)``: deliver a notification (envelope sender ``<>``) to
#: ``recipient`` durably before returning; raise to have it retried later.
BounceSink = Callable[[str, Iterable[bytes]], object]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One envelope recipient and its delivery state.

    ``notify`` holds the RFC 3461 section 4.1 NOTIFY keywords as given (``SUCCESS``,
    ``FAILURE``, ``DELAY`` or ``NEVER``); empty means the client gave none, which we treat
    as ``FAILURE``. ``orcpt`` is the ORCPT value as received (``rfc822;addr``).
    ``reply`` is the last server reply for this recipient, ``remote_mta`` who gave it.
    ``relayed`` is set when the next hop accepted it without DSN support (RFC 3461
    section 5.2.2: a NOTIFY=SUCCESS request then earns a "relayed" notification);
    ``delay_notified`` once a NOTIFY=DELAY warning was sent.
    """

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    state: RecipientState = "pending"
    reply: str | None = None
    remote_mta: str | None = None
    relayed: bool = False
    expired: bool = False
    delay_notified: bool = False

    @property
    def done(self) -> bool:
        """True once no further attempt will be made for this recipient."""
        return self.state != "pending"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What MAIL FROM / RCPT TO said: the sender (``""`` for the null sender ``<>``),
    the recipients, and the message-level DSN parameters ``ret`` (``FULL``/``HDRS``) and
    ``envid`` (RFC 3461 sections 4.3, 4.4), plus the body type and SMTPUTF8 flag the
    transport must repeat to the next hop (RFC 6152, RFC 6531)."""

    sender: str
    recipients: tuple[Recipient, ...]
    ret: str | None = None
    envid: str | None = None
    body: str | None = None
    smtputf8: bool = False

    @classmethod
    def simple(cls, sender: str, recipients: Iterable[str]) -> Envelope:
        """An envelope with default DSN parameters."""
        return cls(sender, tuple(Recipient(r) for r in recipients))


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of one attempt for one recipient, as the transport saw it.

    ``outcome``: ``delivered`` (the next hop took responsibility, 2xx), ``failed``
    (permanent, 5xx) or ``deferred`` (temporary, 4xx or a connection problem).
    """

    outcome: Literal["delivered", "failed", "deferred"]
    reply: str = ""
    remote_mta: str | None = None
    relayed: bool = False

    @classmethod
    def delivered(
        cls, reply: str = "250 OK", remote_mta: str | None = None, *, relayed: bool = False
    ) -> RecipientResult:
        """The next hop accepted the message for this recipient."""
        return cls("delivered", reply, remote_mta, relayed)

    @classmethod
    def failed(cls, reply: str, remote_mta: str | None = None) -> RecipientResult:
        """Permanent failure: no further attempt, a notification goes to the sender."""
        return cls("failed", reply, remote_mta)

    @classmethod
    def deferred(cls, reply: str, remote_mta: str | None = None) -> RecipientResult:
        """Temporary failure: retried according to the :class:`RetryPolicy`."""
        return cls("deferred", reply, remote_mta)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again and when to give up.

    The n-th retry waits ``first_retry * factor**(n-1)`` seconds, at most
    ``max_interval``. A message still undelivered ``expire_after`` seconds after it was
    queued fails with status 4.4.7 (RFC 3463 section 3.5, "delivery time expired");
    the default, 5 days, is the "at least 4-5 days" of RFC 5321 section 4.5.4.1.
    Recipients that asked for NOTIFY=DELAY (RFC 3461 section 4.1) get one "delayed"
    notification once their message has waited ``delay_warning_after`` seconds (None:
    never).
    """

    first_retry: float = 300.0
    factor: float = 2.0
    max_interval: float = 4 * 3600.0
    expire_after: float = 5 * 86400.0
    delay_warning_after: float | None = 4 * 3600.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        if attempts < 1:
            return 0.0
        return float(min(self.first_retry * self.factor ** (attempts - 1), self.max_interval))


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued message's state, as stored in ``envelope.json``.

    ``wire_size`` is the message's size with CRLF line ends (what SMTP transmits before
    dot-stuffing, and what a POP3 LIST reports); ``notify_pending`` is set once every
    recipient is done but the notification still has to be delivered.
    """

    id: str
    envelope: Envelope
    created: float
    disk_size: int
    wire_size: int
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float | None = None
    last_error: str | None = None
    notify_pending: bool = False

    @property
    def sender(self) -> str:
        """The envelope sender (``""`` for ``<>``)."""
        return self.envelope.sender

    @property
    def recipients(self) -> tuple[Recipient, ...]:
        """Every recipient with its state."""
        return self.envelope.recipients

    @property
    def pending(self) -> tuple[Recipient, ...]:
        """Recipients still to be delivered."""
        return tuple(r for r in self.envelope.recipients if not r.done)

    def to_json(self) -> bytes:
        """Serialise (stable field names; see :meth:`from_json`)."""
        data = asdict(self)
        data["format"] = 1
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> QueueEntry:
        """Parse what :meth:`to_json` wrote."""
        data: dict[str, Any] = json.loads(raw)
        data.pop("format", None)
        env = data.pop("envelope")
        recipients = tuple(
            Recipient(**{**r, "notify": tuple(r.get("notify", ()))}) for r in env.pop("recipients")
        )
        return cls(envelope=Envelope(recipients=recipients, **env), **data)


@dataclass(frozen=True, slots=True)
class FinishOutcome:
    """What :meth:`QueueClaim.finish` did: ``removed`` (the entry left the queue),
    ``notified`` (recipients a notification was sent to), ``next_attempt``."""

    removed: bool
    notified: tuple[str, ...] = ()
    next_attempt: float | None = None
    notify_error: str | None = field(default=None)


class QueueWriter:
    """Incremental enqueue of one message; like :class:`~nosend_store.maildir.MaildirWriter`.

    ``write(chunk)`` as DATA arrives, then ``commit()`` returns the queue id once the
    entry is durable; ``abort()`` discards it.
    """

    def __init__(self, queue: OutboundQueue, envelope: Envelope, qid: str) -> None:
        if not envelope.recipients:
            raise ValueError("an envelope needs at least one recipient")
        self._queue = queue
        self._envelope = envelope
        self._id = qid
        self._dir = os.path.join(queue.path, "tmp", qid)
        os.mkdir(self._dir, 0o700)
        try:
            self._file = StagedFile(os.path.join(self._dir, "message"))
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.id: str | None = None

    @property
    def disk_size(self) -> int:
        """Octets written so far (for size limits)."""
        return self._file.disk_size

    def write(self, chunk: bytes) -> None:
        """Append a chunk (CRLF or LF line ends)."""
        self._file.write(chunk)

    def commit(self, crash_hook: Callable[[str], None] | None = None) -> str:
        """Make the entry durable and visible in ``active/``; return its id."""
        if self._file.closed:
            raise RuntimeError("writer is closed")
        try:
            self._file.finish()
            now = self._queue.now()
            entry = QueueEntry(
                id=self._id,
                envelope=self._envelope,
                created=now,
                disk_size=self._file.disk_size,
                wire_size=self._file.wire_size,
                next_attempt=now,
            )
            _write_new(os.path.join(self._dir, "envelope.json"), entry.to_json())
            _write_new(os.path.join(self._dir, "lock"), b"")
            fsync_dir(self._dir)
            if crash_hook:
                crash_hook("before_rename")
            active = os.path.join(self._queue.path, "active")
            os.rename(self._dir, os.path.join(active, self._id))
        except BaseException:
            self.abort()
            raise
        try:
            if crash_hook:
                crash_hook("before_dir_fsync")
            fsync_dir(active)
        except BaseException:
            # Already visible, but the caller is about to report failure (the client is
            # told 451 and sends again): take it back, or it would be sent twice.
            self.abort()
            try:
                self._queue._remove(self._id)
            except OSError:
                pass
            raise
        self.id = self._id
        return self._id

    def abort(self) -> None:
        """Discard the message. Idempotent."""
        self._file.close()
        if self.id is None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> QueueWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self.id is None:
            self.abort()


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        raise name_path(exc, path) from None
    finally:
        os.close(fd)


class QueueClaim:
    """Exclusive hold on one queued message, from :meth:`OutboundQueue.claim`.

    Record results with :meth:`record`, then :meth:`finish` (persists them, and removes
    the entry when every recipient is done) or :meth:`release` (no attempt was made).
    """

    def __init__(self, queue: OutboundQueue, entry: QueueEntry, lock: FileLock) -> None:
        self._queue = queue
        self._lock = lock
        self._entry = entry
        self._recorded = False

    @property
    def entry(self) -> QueueEntry:
        """The entry, including results recorded so far in this claim."""
        return self._entry

    @property
    def id(self) -> str:
        """The queue id."""
        return self._entry.id

    def open_message(self) -> BinaryIO:
        """The message in disk form (LF line ends, ends with LF)."""
        return open(os.path.join(self._queue.path, "active", self.id, "message"), "rb")

    def wire_chunks(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The message with CRLF line ends, as DATA transmits it before dot-stuffing."""
        with self.open_message() as f:
            yield from crlf_chunks(f, chunk_size)

    def record(self, address: str, result: RecipientResult) -> None:
        """Record one recipient's outcome (in memory until :meth:`finish`/:meth:`save`).

        A deferred result keeps the recipient pending and remembers the reply.
        """
        if not self._lock.held:
            raise RuntimeError("claim already released")
        recipients = list(self._entry.envelope.recipients)
        for i, r in enumerate(recipients):
            if r.address == address and not r.done:
                state: RecipientState = (
                    "pending" if result.outcome == "deferred" else result.outcome
                )
                recipients[i] = replace(
                    r,
                    state=state,
                    reply=result.reply or r.reply,
                    remote_mta=result.remote_mta,
                    relayed=result.relayed,
                )
                break
        else:
            raise KeyError(f"no pending recipient {address!r}")
        last_error = self._entry.last_error
        if result.outcome != "delivered" and result.reply:
            last_error = result.reply
        self._entry = replace(
            self._entry,
            envelope=replace(self._entry.envelope, recipients=tuple(recipients)),
            last_error=last_error,
        )
        self._recorded = True

    def reschedule(self, next_attempt: float) -> None:
        """Set the next attempt time and persist it (e.g. ``0.0``: "flush the queue now",
        as an administrator or a link coming up may ask). A time further ahead than the
        retry policy's ``max_interval`` is taken for one set before the clock went back:
        :meth:`OutboundQueue.due` lists the entry at once."""
        self._entry = replace(self._entry, next_attempt=next_attempt)
        self.save()

    def save(self) -> None:
        """Persist recorded results now (a transport may checkpoint mid-session so a
        crash re-sends as little as possible)."""
        self._queue._store(self._entry)

    def finish(
        self,
        now: float | None = None,
        *,
        count_attempt: bool = True,
        expire: bool = True,
        keep_unsent_reports: bool = False,
    ) -> FinishOutcome:
        """End the attempt: persist results, expire if too old, notify, remove if done.

        Counts an attempt if any result was recorded (and ``count_attempt``) and then
        schedules the next one with the retry policy's backoff. Releases the claim.

        ``expire=False`` leaves expiry to :meth:`OutboundQueue.maintain` (for holders that
        may not know the site's retry policy). ``keep_unsent_reports``: when a report is
        due and this queue has no ``bounce_sink``, keep the entry (``notify_pending``) for
        a pass that has one instead of removing it with the report unsent.
        """
        try:
            now = self._queue.now() if now is None else now
            entry = self._entry
            if entry.created > now:
                # The clock went back past the message's arrival: its age counts from
                # now, so it expires at most expire_after from here, not once the clock
                # has caught up with the old arrival time.
                entry = replace(entry, created=now)
            if self._recorded and count_attempt:
                attempts = entry.attempts + 1
                entry = replace(
                    entry,
                    attempts=attempts,
                    last_attempt=now,
                    next_attempt=now + self._queue.policy.delay(attempts),
                )
            if expire and entry.pending and now >= entry.created + self._queue.policy.expire_after:
                entry = _expire(entry)
            self._entry = entry
            return self._queue._settle(entry, now, keep_unsent_reports=keep_unsent_reports)
        finally:
            self.release()

    def release(self) -> None:
        """Give the message back without finishing (results not saved). Idempotent."""
        self._lock.release()

    def __enter__(self) -> QueueClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _expire(entry: QueueEntry) -> QueueEntry:
    recipients = tuple(
        r if r.done else replace(r, state="failed", expired=True) for r in entry.recipients
    )
    return replace(entry, envelope=replace(entry.envelope, recipients=recipients))


class OutboundQueue:
    """The outbound queue in directory ``path`` (created if missing).

    ``bounce_sink(recipient, chunks)`` receives delivery status notifications, to be
    delivered with the null sender to ``recipient`` (normally the sender's local
    mailbox); without it notifications are dropped. ``hostname`` is the Reporting-MTA.
    Thread-safe and multi-process safe; holds no open files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        bounce_sink: BounceSink | None = None,
        hostname: str | None = None,
        namer: UniqueNamer | None = None,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self.policy = policy if policy is not None else RetryPolicy()
        self._clock = clock
        self._sink = bounce_sink
        self._namer = namer if namer is not None else UniqueNamer(hostname, clock=clock)
        self._hostname = hostname if hostname is not None else self._namer.host
        created = False
        for sub in ("", "tmp", "active"):
            p = os.path.join(self._path, sub)
            if not os.path.isdir(p):
                os.makedirs(p, 0o700, exist_ok=True)
                created = True
        if created:
            fsync_dir(self._path)
            fsync_dir(os.path.dirname(self._path))

    @property
    def path(self) -> str:
        """Absolute path of the queue root."""
        return self._path

    def now(self) -> float:
        """The queue's clock."""
        return self._clock()

    # -- enqueue -------------------------------------------------------------------------

    def open_writer(self, envelope: Envelope) -> QueueWriter:
        """Start an incremental enqueue (see :class:`QueueWriter`)."""
        return QueueWriter(self, envelope, self._namer.new_name())

    def enqueue(self, envelope: Envelope, chunks: Iterable[bytes]) -> str:
        """Queue a message from a (sync) iterable of chunks; return its id once durable."""
        with self.open_writer(envelope) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    # -- listing -------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """Ids of every committed entry, oldest first."""
        try:
            names = os.listdir(os.path.join(self._path, "active"))
        except FileNotFoundError:
            return []
        return sorted(names, key=_id_sort_key)

    def get(self, qid: str) -> QueueEntry | None:
        """The stored state of ``qid``, or None if it left the queue."""
        try:
            with open(os.path.join(self._path, "active", qid, "envelope.json"), "rb") as f:
                return QueueEntry.from_json(f.read())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_message(self, qid: str) -> BinaryIO:
        """Read the message of ``qid`` without claiming it (for listings and inspection;
        the file never changes while queued). Raises :class:`FileNotFoundError` once the
        entry has left the queue."""
        return open(os.path.join(self._path, "active", qid, "message"), "rb")

    def entries(self) -> list[QueueEntry]:
        """Every entry, oldest first (a snapshot; entries may leave meanwhile).

        An entry whose ``envelope.json`` cannot be parsed is left out (and left on disk
        for the administrator, see :meth:`ids`): one spoilt file must not stop expiry,
        reports and sending for every other message.
        """
        out = []
        for qid in self.ids():
            try:
                entry = self.get(qid)
            except _UNREADABLE:
                continue
            if entry is not None:
                out.append(entry)
        return out

    def due(self, now: float | None = None) -> list[QueueEntry]:
        """Entries whose next attempt time has come (``now`` defaults to the clock)."""
        now = self.now() if now is None else now
        # No backoff waits longer than max_interval: a next attempt further ahead than that
        # was scheduled before the clock went back, and is due now rather than when the
        # clock catches up again (maybe years later).
        horizon = now + self.policy.max_interval
        return [e for e in self.entries() if e.next_attempt <= now or e.next_attempt > horizon]

    # -- claims --------------------------------------------------------------------------

    def claim(self, qid: str, timeout: float = 0.0) -> QueueClaim | None:
        """Take ``qid`` exclusively; None if another holder has it or it left the queue."""
        entry_dir = os.path.join(self._path, "active", qid)
        lock_path = os.path.join(entry_dir, "lock")
        lock = FileLock(lock_path)
        try:
            if not lock.acquire(timeout):
                return None
        except (FileNotFoundError, NotADirectoryError):
            return None
        # The previous holder may have removed the entry while we waited: check that the
        # lock we hold is still the entry's lock file, then read the state it guards.
        try:
            entry = self.get(qid) if lock.same_file_as(lock_path) else None
        except _UNREADABLE:
            entry = None  # spoilt: not ours to send (see entries())
        except BaseException:
            lock.release()
            raise
        if entry is None:
            lock.release()
            return None
        return QueueClaim(self, entry, lock)

    def claim_due(self, now: float | None = None) -> Iterator[QueueClaim]:
        """Claim, one after another, every due entry not held by someone else."""
        for entry in self.due(now):
            claim = self.claim(entry.id)
            if claim is not None:
                yield claim

    def _store(self, entry: QueueEntry) -> None:
        atomic_write(
            os.path.join(self._path, "active", entry.id, "envelope.json"),
            entry.to_json(),
            tmp_suffix=self._namer.new_name(),
        )

    def _settle(
        self, entry: QueueEntry, now: float, *, keep_unsent_reports: bool = False
    ) -> FinishOutcome:
        """Persist ``entry``; when all recipients are done, notify and remove it."""
        if entry.pending:
            return self._settle_pending(entry, now)
        dsn = self._dsn_recipients(entry, now)
        notified: tuple[str, ...] = ()
        if dsn and self._sink is None and keep_unsent_reports:
            # maintain() with a bounce sink sends it, then removes the entry.
            self._store(replace(entry, notify_pending=True))
            return FinishOutcome(removed=False, next_attempt=entry.next_attempt)
        if dsn and self._sink is not None:
            if not entry.notify_pending:
                entry = replace(entry, notify_pending=True)
            # Recorded first, so that a crash after the sink but before the removal makes
            # maintain() notify again: a duplicate report rather than a lost one.
            self._store(entry)
            error = self._notify(entry, dsn, now)
            if error is not None:
                return FinishOutcome(
                    removed=False, next_attempt=entry.next_attempt, notify_error=error
                )
            notified = tuple(r.final_recipient for r in dsn)
        self._remove(entry.id)
        return FinishOutcome(removed=True, notified=notified)

    def _settle_pending(self, entry: QueueEntry, now: float) -> FinishOutcome:
        warn = self._delay_warnings(entry, now)
        notified: tuple[str, ...] = ()
        error = None
        if warn and self._sink is not None:
            error = self._notify(entry, warn, now)
            if error is None:
                warned = {d.final_recipient for d in warn}
                recipients = tuple(
                    replace(r, delay_notified=True) if not r.done and r.address in warned else r
                    for r in entry.recipients
                )
                entry = replace(entry, envelope=replace(entry.envelope, recipients=recipients))
                notified = tuple(sorted(warned))
        self._store(entry)
        return FinishOutcome(
            removed=False, notified=notified, next_attempt=entry.next_attempt, notify_error=error
        )

    def _notify(self, entry: QueueEntry, dsn: list[DsnRecipient], now: float) -> str | None:
        """Hand one report to the sink; return an error text if it failed."""
        assert self._sink is not None
        try:
            with open(os.path.join(self._path, "active", entry.id, "message"), "rb") as f:
                chunks = build_dsn(
                    sender=entry.sender,
                    recipients=dsn,
                    reporting_mta=self._hostname,
                    now=now,
                    arrival=entry.created,
                    envid=entry.envelope.envid,
                    original=f,
                    headers_only=(entry.envelope.ret or "").upper() == "HDRS",
                )
                self._sink(entry.sender, chunks)
        except Exception as exc:  # the sink failed: keep the entry, retry later
            return repr(exc)
        return None

    def _delay_warnings(self, entry: QueueEntry, now: float) -> list[DsnRecipient]:
        after = self.policy.delay_warning_after
        if not entry.sender or after is None or now < entry.created + after:
            return []
        return [
            DsnRecipient(
                final_recipient=r.address,
                action="delayed",
                # A pending recipient has only seen temporary failures (class 4).
                status="4" + status_from_reply(r.reply or "", default_class="4")[1:],
                original_recipient=r.orcpt,
                remote_mta=r.remote_mta,
                diagnostic=r.reply,
                last_attempt=entry.last_attempt,
                will_retry_until=entry.created + self.policy.expire_after,
            )
            for r in entry.pending
            # RFC 3461 section 4.1: only on request; a NOTIFY without DELAY means none.
            if "DELAY" in {n.upper() for n in r.notify} and not r.delay_notified
        ]

    def _dsn_recipients(self, entry: QueueEntry, now: float) -> list[DsnRecipient]:
        # RFC 5321 section 4.5.5: a message with the null sender gets no notification.
        if not entry.sender:
            return []
        out = []
        for r in entry.recipients:
            notify = {n.upper() for n in r.notify} or {"FAILURE"}
            if "NEVER" in notify:
                continue
            if r.state == "failed" and "FAILURE" in notify:
                if r.expired:
                    status = "4.4.7"
                    diagnostic = r.reply
                else:
                    status = status_from_reply(r.reply or "", default_class="5")
                    if status.startswith(("2", "4")):
                        status = "5" + status[1:]
                    diagnostic = r.reply
                out.append(
                    DsnRecipient(
                        final_recipient=r.address,
                        action="failed",
                        status=status,
                        original_recipient=r.orcpt,
                        remote_mta=r.remote_mta,
                        diagnostic=diagnostic,
                        last_attempt=entry.last_attempt,
                    )
                )
            elif r.state == "delivered" and r.relayed and "SUCCESS" in notify:
                out.append(
                    DsnRecipient(
                        final_recipient=r.address,
                        action="relayed",
                        status="2.0.0",
                        original_recipient=r.orcpt,
                        remote_mta=r.remote_mta,
                        diagnostic=r.reply,
                        last_attempt=entry.last_attempt,
                    )
                )
        return out

    def _remove(self, qid: str) -> None:
        # Renaming out of active/ is atomic; the rest is cleanup of an invisible copy.
        active = os.path.join(self._path, "active")
        doomed = os.path.join(self._path, "tmp", f"{qid}.done.{self._namer.new_name()}")
        os.rename(os.path.join(active, qid), doomed)
        fsync_dir(active)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- maintenance ---------------------------------------------------------------------

    def maintain(self, now: float | None = None) -> list[FinishOutcome]:
        """Expire overdue entries and deliver outstanding notifications and delay warnings.

        Run it periodically even when no link comes up, so that expiry (RFC 5321
        section 4.5.4.1) happens on time. Claimed entries are skipped.
        """
        now = self.now() if now is None else now
        out = []
        for entry in self.entries():
            overdue = entry.pending and now >= entry.created + self.policy.expire_after
            warn = bool(self._delay_warnings(entry, now))
            # An arrival time ahead of the clock (it went back) is set right by finish().
            future = entry.created > now
            if not (overdue or warn or future or entry.notify_pending or not entry.pending):
                continue
            claim = self.claim(entry.id)
            if claim is None:
                continue
            with claim:
                out.append(claim.finish(now))
        return out

    def clean_tmp(self, max_age: float = 36 * 3600.0) -> int:
        """Remove staging leftovers older than ``max_age`` seconds (crashed enqueues)."""
        now = self.now()
        removed = 0
        tmp = os.path.join(self._path, "tmp")
        with os.scandir(tmp) as it:
            for entry in it:
                try:
                    # ".done." copies already left the queue (a crash interrupted their
                    # deletion): remove them whatever their age.
                    finished = ".done." in entry.name
                    if finished or now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path, ignore_errors=True)
                        else:
                            os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


#: What parsing a spoilt ``envelope.json`` raises (JSONDecodeError and UnicodeDecodeError
#: are ValueErrors; missing or unknown fields give KeyError/TypeError).
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def _id_sort_key(qid: str) -> tuple[int, int, str]:
    head, _, rest = qid.partition(".")
    micros = rest[1:].split("P", 1)[0] if rest.startswith("M") else "0"
    try:
        return (int(head), int(micros), qid)
    except ValueError:
        return (0, 0, qid)


class MaildirBounceSink:
    """A ready-made ``bounce_sink``: reports go into the sender's local Maildir.

    ``resolve(address)`` returns the Maildir path of a local address, or None. A report
    for a sender with no local mailbox is queued outbound with the null sender (RFC 3461
    section 6.1) and NOTIFY=NEVER, so a report is never reported on, when ``queue`` is
    given, and dropped otherwise. Delivery is durable before the call returns.
    """

    def __init__(
        self,
        resolve: Callable[[str], str | os.PathLike[str] | None],
        *,
        queue: OutboundQueue | None = None,
    ) -> None:
        self._resolve = resolve
        self._queue = queue

    def __call__(self, recipient: str, chunks: Iterable[bytes]) -> str | None:
        """Deliver one report; return the Maildir key or queue id (None if dropped)."""
        path = self._resolve(recipient)
        if path is not None:
            return MaildirMailbox(path).deliver(chunks)
        if self._queue is not None:
            envelope = Envelope("", (Recipient(recipient, notify=("NEVER",)),))
            return self._queue.enqueue(envelope, chunks)
        return None
