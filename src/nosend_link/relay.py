"""Relaying the outbound queue to the upstream smarthost: one cycle, one connection.

Owns: :func:`relay_queue` -- which queued messages go, in which order, under which time
limit, and what each server answer means for the queue (:mod:`nosend_store.queue`
records it and writes the RFC 3464 reports); :class:`RelayReport`; :class:`TimeLimit`.
The SMTP conversation itself is :mod:`nosend_runners.client.smtp`'s.

Must not: dial or pick a link (the link layer does, and passes ``link_max_size``), log,
or put a secret into a report or an exception text.

Decisions, for a link that costs by the minute and drops without warning:

* One connection per cycle for the whole queue: one TCP, TLS and AUTH handshake; with
  PIPELINING and CHUNKING the messages follow each other without waiting for replies,
  so a cycle's round trips do not grow with the number of messages.
* Order: small and old first. The key is ``(size class, queued at, id)`` where the size
  class of a message of ``n`` octets (CRLF form) is 0 up to 16 KiB and then one more
  for each factor of 4 (64 KiB: 1, 256 KiB: 2, 1 MiB: 3, ...). A dropped call then has
  carried as many messages as it could, and one big attachment waits behind the notes.
* A per-message time limit, scaled to size: ``base + size / min_rate`` seconds
  (:class:`TimeLimit`, by default 120 s plus 150 octets a second, half what an Iridium
  call carries). A message over its limit is deferred with the queue's backoff; the
  connection (which that message blocks) is dropped and opened again ONCE for the rest
  of the queue; a second stall ends the cycle. So one huge or hung message never holds
  up the others, and a stalled server costs at most two handshakes.
* Per recipient: 2xx after the body -> delivered; 4xx -> deferred (the queue's
  backoff); 5xx -> failed, and the queue sends the sender its RFC 3464 report.
  A message refused locally because it is over the server's SIZE (RFC 1870 section 6)
  fails too (552 5.3.4): it will never fit that server. A message over the *link's*
  cap (``link_max_size``) is not touched at all: it waits for a cheaper link.
* A link that drops mid-message loses nothing: only a 250 after the body makes a
  recipient delivered; a message whose outcome did not arrive is released unrecorded
  (no attempt counted, no backoff) and goes again, whole, next cycle. Claims are file
  locks, so a ``kill -9`` releases them too.
* Before a body over 16 KiB, the relay waits for the results of the messages before
  it (one round trip per big message, none for small ones): a call that drops during a
  long upload then never makes an earlier message, accepted but not yet confirmed, go
  twice.
* Results are recorded (``finish``, which fsyncs) as each message's final reply
  arrives, while the batch goes on: a crash later in the cycle re-sends nothing the
  server already accepted. (A crash between the server's 250 and our fsync re-sends that
  one message: SMTP has no way to avoid it, RFC 1047.)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.to_thread

from nosend_link.secrets import SecretError, resolve_secret
from nosend_link.transfer_events import (
    BytesMoved,
    MessageDone,
    Progress,
    TransferEvent,
    TransferFinished,
    TransferStarted,
)
from nosend_proto import LocalProtocolError, RemoteProtocolError
from nosend_proto.smtp_client_events import (
    MessageResult,
    OriginalRecipient,
    Recipient,
    Reply,
    SMTPClientConfig,
    Transaction,
)
from nosend_proto.smtp_client_events import (
    RecipientResult as RcptAnswer,
)
from nosend_runners.client.connection import LinkMeter, UpstreamError, open_upstream
from nosend_runners.client.smtp import (
    Login,
    MessageTimedOut,
    Outgoing,
    SMTPClientError,
    SMTPClientSession,
)
from nosend_runners.mail.housekeeping import report_mailbox, retry_policy
from nosend_store.config import Account, Config
from nosend_store.queue import (
    MaildirBounceSink,
    OutboundQueue,
    QueueClaim,
    QueueEntry,
    RecipientResult,
)

__all__ = [
    "TimeLimit",
    "RelayReport",
    "relay_queue",
    "relay_order",
    "size_class",
    "smtp_client_config",
    "account_login",
    "CONNECT_TIMEOUT",
    "IDLE_TIMEOUT",
]

#: Seconds to wait for the TCP connection (a satellite call may still be settling).
CONNECT_TIMEOUT = 60.0
#: Seconds the handshake (greeting, EHLO, TLS, AUTH) may wait for any one reply.
IDLE_TIMEOUT = 120.0

_SMALL = 16 * 1024


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """How long one message may take: ``base + size / min_rate`` seconds.

    ``min_rate`` is in octets a second: the slowest rate still worth waiting for.
    """

    base: float = 120.0
    min_rate: float = 150.0

    def for_size(self, size: int) -> float:
        """The limit for a message of ``size`` octets."""
        if self.min_rate <= 0:
            return math.inf
        return self.base + size / self.min_rate


@dataclass(frozen=True, slots=True)
class RelayReport:
    """What one relay cycle did for one smtp account.

    ``sent``: messages the smarthost accepted for at least one recipient. ``deferred``:
    messages still queued with a recipient to try later (4xx, a time limit, or a link
    that dropped before their outcome). ``failed``: messages with a recipient refused
    for good (the sender gets a report). A message may count under more than one.
    ``skipped``: due messages left alone (over the link's size cap, or being sent by
    another process). Bytes and round trips are the link's, TLS included.
    ``connections``: how many were opened. ``error``: why the cycle stopped early.
    """

    account: str
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0
    message_bytes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    round_trips: int = 0
    connections: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the cycle did all it could: no connection, login or link error."""
        return self.error is None


def size_class(size: int) -> int:
    """0 up to 16 KiB, then one more for each factor of 4 (see the module docstring)."""
    klass = 0
    limit = _SMALL
    while size > limit:
        klass += 1
        limit *= 4
    return klass


def relay_order(entry: QueueEntry) -> tuple[int, float, str]:
    """The sort key of the queue for relaying: size class, then age, then id."""
    return size_class(entry.wire_size), entry.created, entry.id


def smtp_client_config(config: Config, account: Account) -> SMTPClientConfig:
    """The engine's configuration for ``account``: TLS required unless ``tls = none``."""
    tls = account.tls
    return SMTPClientConfig(
        local_hostname=config.server.hostname,
        starttls=tls == "starttls",
        require_tls=tls != "none",
        tls_active=tls == "implicit",
        auth_requires_tls=tls != "none",
    )


def account_login(account: Account) -> Login | None:
    """The account's login with its secret fetched now (None without a ``user``).

    Raises :class:`~nosend_link.secrets.SecretError` (runs ``secret_command``: call it
    in a worker thread).
    """
    if account.user is None:
        return None
    secret = resolve_secret(
        account.name,
        secret=account.secret,
        secret_file=account.secret_file,
        secret_command=account.secret_command or None,
    )
    if secret is None:
        raise SecretError(f"account {account.name}: user {account.user} has no secret")
    if account.auth == "auto":
        return Login(account.user, secret)
    return Login(account.user, secret, (account.auth.upper(),))


def _open_queue(config: Config, clock: Callable[[], float]) -> OutboundQueue | None:
    """The queue as housekeeping opens it, reports going to local senders' mailboxes."""
    server = config.server
    if not server.queue_dir.is_dir():
        return None
    policy = retry_policy(config)
    outbound = OutboundQueue(server.queue_dir, policy=policy, clock=clock,
                             hostname=server.hostname)
    sink = MaildirBounceSink(functools.partial(report_mailbox, config), queue=outbound)
    return OutboundQueue(server.queue_dir, policy=policy, clock=clock, bounce_sink=sink,
                         hostname=server.hostname)


def _eight_bit(claim: QueueClaim) -> bool:
    """Whether the message must go as 8BITMIME: declared so, or octets over 127 found.

    The file is read rather than the envelope trusted for 7BIT: an 8-bit octet in a body
    declared 7-bit would make the engine stop mid-message (RFC 6152).
    """
    if (claim.entry.envelope.body or "").upper() == "8BITMIME":
        return True
    with claim.open_message() as handle:
        while chunk := handle.read(64 * 1024):
            if not chunk.isascii():
                return True
    return False


def _transaction(entry: QueueEntry, eight_bit: bool) -> Transaction:
    recipients = []
    for r in entry.pending:
        orcpt = None
        if r.orcpt and ";" in r.orcpt:
            kind, _, address = r.orcpt.partition(";")
            if kind.isalnum() and address:
                orcpt = OriginalRecipient(kind, address)
        recipients.append(Recipient(r.address, tuple(r.notify) or None, orcpt))
    env = entry.envelope
    return Transaction(
        entry.sender,
        tuple(recipients),
        size=entry.wire_size,
        eight_bit=eight_bit,
        smtputf8=env.smtputf8,
        ret=env.ret if env.ret in ("FULL", "HDRS") else None,
        envid=env.envid or None,
    )


class _Item:
    """One claimed message during the cycle; it is its own ``Outgoing.key``."""

    def __init__(self, position: int, claim: QueueClaim, eight_bit: bool,
                 limits: TimeLimit) -> None:
        self.position = position
        self.claim = claim
        self.done = False
        size = claim.entry.wire_size
        self.outgoing = Outgoing(
            self, _transaction(claim.entry, eight_bit), functools.partial(_body, claim),
            size, limits.for_size(size), checkpoint=size > _SMALL)


Outcome = Literal["sent", "deferred", "refused"]

_LOCAL_REPLIES = {
    # RFC 1870 section 6 / RFC 3463: 5.3.4 "message too big for system".
    "size": "552 5.3.4 message size exceeds the smarthost's limit ({limit} octets, SIZE)",
    # RFC 6152 section 3 / RFC 3463 5.6.3 "conversion required but not supported".
    "8bitmime": "554 5.6.3 8-bit message and the smarthost does not offer 8BITMIME",
    # RFC 6531 section 3.2 / RFC 6533: 5.6.7 "non-ASCII addresses not permitted".
    "smtputf8": "553 5.6.7 the smarthost does not offer SMTPUTF8",
}


class _Cycle:
    """The state of one :func:`relay_queue` call."""

    def __init__(
        self,
        config: Config,
        account: Account,
        queue: OutboundQueue,
        progress: Progress | None,
    ) -> None:
        self.config = config
        self.account = account
        self.queue = queue
        self.progress = progress
        self.items: list[_Item] = []  # claimed so far, in order
        self.planned = 0  # messages the cycle set out to send (TransferStarted.messages)
        self.size_limit: int | None = None  # the server's SIZE, for the refusal text
        self.sent = self.deferred = self.failed = 0
        self.message_bytes = 0

    def emit(self, event: TransferEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def user_of(self, entry: QueueEntry) -> str | None:
        resolution = self.config.resolve(entry.sender) if entry.sender else None
        if resolution is not None and resolution.mailboxes:
            return resolution.mailboxes[0]
        return entry.sender or None

    def done(self, item: _Item, outcome: Outcome) -> None:
        item.done = True
        entry = item.claim.entry
        self.emit(MessageDone(
            self.account.name, "out", item.position, self.planned, entry.wire_size,
            outcome, self.user_of(entry)))

    def on_bytes(self, outgoing: Outgoing, done: int) -> None:
        item = outgoing.key
        assert isinstance(item, _Item)
        self.emit(BytesMoved(self.account.name, "out", item.position, done, outgoing.size))

    def on_result(self, outgoing: Outgoing, result: MessageResult) -> None:
        item = outgoing.key
        assert isinstance(item, _Item)
        if result.local_reason == "connection-lost":
            return  # nothing recorded: the message goes again, whole, next time
        claim = item.claim
        host = self.account.host
        local = _LOCAL_REPLIES.get(result.local_reason or "")
        delivered = failed = deferred = 0
        if local is not None:
            limit = self.size_limit
            reply = local.format(limit=limit)
            for r in claim.entry.pending:
                claim.record(r.address, RecipientResult.failed(reply, host))
                failed += 1
        else:
            answered = {id(rr.recipient): rr for rr in result.recipients}
            for recipient in outgoing.transaction.recipients:
                kind, reply = _verdict(answered.get(id(recipient)), result)
                if kind == "delivered":
                    claim.record(recipient.address, RecipientResult.delivered(
                        reply, host, relayed=result.dsn_dropped))
                    delivered += 1
                elif kind == "deferred":
                    claim.record(recipient.address, RecipientResult.deferred(reply, host))
                    deferred += 1
                else:
                    claim.record(recipient.address, RecipientResult.failed(reply, host))
                    failed += 1
        # Recorded at once, so that a crash later in the cycle re-sends nothing the
        # server accepted; a few milliseconds of fsync, on the event loop on purpose.
        claim.finish()
        self.sent += bool(delivered)
        self.failed += bool(failed)
        self.deferred += bool(deferred)
        if delivered:
            self.message_bytes += claim.entry.wire_size
        self.done(item, "sent" if delivered else "deferred" if deferred else "refused")

    def timed_out(self, item: _Item, limit: float) -> None:
        claim = item.claim
        reply = (f"451 4.4.2 nosend: no answer within the message's time limit of "
                 f"{limit:.0f} s; the connection was dropped")
        for r in claim.entry.pending:
            claim.record(r.address, RecipientResult.deferred(reply, self.account.host))
        claim.finish()
        self.deferred += 1
        self.done(item, "deferred")


def _verdict(
    answer: RcptAnswer | None, result: MessageResult
) -> tuple[Literal["delivered", "deferred", "failed"], str]:
    """What one recipient's RCPT answer and the message's outcome mean for the queue.

    2xx to RCPT and to the body: delivered. A 4xx anywhere that decided it: deferred.
    A 5xx: failed. A 503 to RCPT ("bad sequence", RFC 5321 section 4.2.4) only repeats
    that MAIL FROM was refused in a pipelined group: the MAIL reply decides, so a
    temporary refusal of the sender never becomes a permanent one for the recipient.
    No answer at all (the connection ended) is temporary.
    """
    final = result.reply
    if answer is not None and answer.reply.code == 503 and final is not None \
            and final.code != 503:
        answer = None
    if answer is not None and not answer.accepted:
        return ("deferred" if answer.temporary else "failed"), _text(answer.reply)
    if result.accepted:
        assert final is not None
        return "delivered", _text(final)
    if final is None:
        return "deferred", "451 4.4.2 the connection ended before the server answered"
    if 400 <= final.code < 500:
        return "deferred", _text(final)
    return "failed", _text(final)


def _text(reply: Reply) -> str:
    """The reply as the queue stores it: code, RFC 3463 code, first line of text."""
    text = reply.text.split("\n", 1)[0]
    if reply.enhanced:
        return f"{reply.code} {reply.enhanced} {text}".strip()
    return f"{reply.code} {text}".strip()


async def relay_queue(
    config: Config,
    account: Account,
    *,
    link_max_size: int | None = None,
    only: Collection[str] | None = None,
    due_only: bool = True,
    progress: Progress | None = None,
    meter: LinkMeter | None = None,
    message_timeout: TimeLimit = TimeLimit(),
    clock: Callable[[], float] = time.time,
    idle_timeout: float = IDLE_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> RelayReport:
    """Send the outbound queue through smtp ``account`` on one connection.

    ``only``: queue ids to consider (default: all). ``due_only``: leave messages whose
    retry time has not come (default); a message deferred by a dropped link stays due.
    ``link_max_size``: messages larger than this (CRLF octets) wait for another link.
    ``meter`` gets this cycle's bytes and round trips added. Never raises for a network,
    TLS, login or secret problem: the report says it (``error``) and everything not
    sent stays queued.
    """
    if account.type != "smtp":
        raise ValueError(f"account {account.name} is not an smtp account")
    name = account.name
    local_meter = LinkMeter()
    queue = await anyio.to_thread.run_sync(_open_queue, config, clock)
    entries = [] if queue is None else await anyio.to_thread.run_sync(
        functools.partial(_candidates, queue, only, due_only))
    skipped = 0
    wanted = []
    for entry in sorted(entries, key=relay_order):
        if link_max_size is not None and entry.wire_size > link_max_size:
            skipped += 1  # waits, untouched, for a link that may carry it
        else:
            wanted.append(entry)
    if queue is None or not wanted:
        return RelayReport(account=name, skipped=skipped)
    cycle = _Cycle(config, account, queue, progress)
    source = _Source(queue, wanted, cycle, message_timeout)
    cycle.planned = len(wanted)
    error: str | None = None
    connections = 0
    cycle.emit(TransferStarted(name, "out", len(wanted), sum(e.wire_size for e in wanted)))
    try:
        login = await anyio.to_thread.run_sync(account_login, account)
        for _attempt in range(2):  # the first connection, and one after a stall
            connections += 1
            stalled = await _one_connection(
                config, account, cycle, source, login, local_meter,
                idle_timeout=idle_timeout, connect_timeout=connect_timeout)
            if stalled is None or not source.more():
                break
        else:
            if source.more():
                error = "a second message stalled; the rest waits for the next cycle"
    except (SMTPClientError, UpstreamError, SecretError) as exc:
        error = str(exc)
    except (RemoteProtocolError, LocalProtocolError) as exc:
        error = f"protocol error: {exc}"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc.strerror or exc}"
    except BaseException:
        # Cancelled (max_online, Ctrl-C, SIGTERM): the bytes that crossed are still
        # billed by the caller's meter.
        if meter is not None:
            meter.add(local_meter)
        raise
    finally:
        for item in cycle.items:
            if not item.done:
                item.claim.release()
    left = source.abandon()
    if left and error is None:
        error = "the link dropped before every message was sent"
    cycle.emit(TransferFinished(name, "out", error is None, error))
    if meter is not None:
        meter.add(local_meter)
    return RelayReport(
        account=name,
        sent=cycle.sent,
        deferred=cycle.deferred,
        failed=cycle.failed,
        skipped=skipped + source.skipped,
        message_bytes=cycle.message_bytes,
        bytes_sent=local_meter.bytes_sent,
        bytes_received=local_meter.bytes_received,
        round_trips=local_meter.round_trips,
        connections=connections,
        error=error,
    )


class _Source:
    """The messages of a cycle, claimed one at a time as the session asks for the next.

    Claiming late keeps one open lock file per message *in flight*, not per queued
    message: a queue of thousands after a long outage must not run out of descriptors.
    """

    def __init__(self, queue: OutboundQueue, entries: list[QueueEntry], cycle: _Cycle,
                 limits: TimeLimit) -> None:
        self.queue = queue
        self.entries = entries
        self.cycle = cycle
        self.limits = limits
        self.position = 0  # how many of ``entries`` were taken
        self.skipped = 0

    def more(self) -> bool:
        """Whether anything is left: claimed without a result, or not taken yet."""
        return self.position < len(self.entries) or any(
            not i.done for i in self.cycle.items)

    def outgoing(self) -> Iterator[Outgoing]:
        """The unfinished claimed messages (after a reconnect), then the rest in order."""
        for item in [i for i in self.cycle.items if not i.done]:
            yield item.outgoing
        while self.position < len(self.entries):
            entry = self.entries[self.position]
            self.position += 1
            claim = self.queue.claim(entry.id)
            if claim is None or not claim.entry.pending:
                # Held by another transport (or the POP3 queue drop), or done meanwhile.
                if claim is not None:
                    claim.release()
                self.skipped += 1
                continue
            try:
                eight_bit = _eight_bit(claim)
            except BaseException:
                claim.release()
                raise
            item = _Item(self.position, claim, eight_bit, self.limits)
            self.cycle.items.append(item)
            yield item.outgoing

    def abandon(self) -> int:
        """Count what this cycle leaves queued unrecorded (claims are released already)."""
        cycle = self.cycle
        left = 0
        for item in cycle.items:
            if not item.done:
                cycle.done(item, "deferred")  # released unrecorded: due again next cycle
                left += 1
        for position in range(self.position, len(self.entries)):
            entry = self.entries[position]
            cycle.emit(MessageDone(cycle.account.name, "out", position + 1, len(self.entries),
                                   entry.wire_size, "deferred", cycle.user_of(entry)))
            left += 1
        self.position = len(self.entries)
        cycle.deferred += left
        return left


def _candidates(
    queue: OutboundQueue, only: Collection[str] | None, due_only: bool
) -> list[QueueEntry]:
    entries = queue.due() if due_only else queue.entries()
    if only is not None:
        wanted = set(only)
        entries = [e for e in entries if e.id in wanted]
    return [e for e in entries if e.pending]


def _body(claim: QueueClaim) -> Iterator[bytes]:
    # The disk form (LF line ends); the engine turns every line end into CRLF.
    with claim.open_message() as handle:
        while chunk := handle.read(64 * 1024):
            yield chunk


async def _one_connection(
    config: Config,
    account: Account,
    cycle: _Cycle,
    source: _Source,
    login: Login | None,
    meter: LinkMeter,
    *,
    idle_timeout: float,
    connect_timeout: float,
) -> _Item | None:
    """Open, log in, send what ``source`` gives; the item that stalled, if one did."""
    upstream = await open_upstream(
        account.host, account.port, tls=account.tls, ca_file=account.ca_file,
        fingerprint=account.fingerprint, timeout=idle_timeout,
        connect_timeout=connect_timeout, meter=meter, verify=account.tls_verify)
    try:
        session = SMTPClientSession(upstream, smtp_client_config(config, account))
        info = await session.open(login)
        cycle.size_limit = info.extensions.size
        try:
            await session.send(source.outgoing(), cycle.on_result, on_bytes=cycle.on_bytes)
        except MessageTimedOut as exc:
            item = exc.outgoing.key
            assert isinstance(item, _Item)
            cycle.timed_out(item, exc.limit)
            return item
        await session.quit()
    finally:
        await upstream.aclose()
    return None
