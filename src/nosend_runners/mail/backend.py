"""nosend's own backend: ``mail.cfg`` policy, Maildir and queue delivery, DSN reports.

Owns: :class:`MailBackend`, the default implementation of the session backend interface
(:mod:`nosend_runners.session.backend`) for one loaded configuration, and the session
coroutines ``nosend serve`` and ``nosend inetd`` run (:func:`run_smtp`, :func:`run_pop3`:
the backend of the session's own ``mail.cfg`` snapshot, or a refusal when there is none).
For SMTP: the sender and each recipient through :mod:`nosend_runners.mail.policy` (unknown
local users refused at RCPT time, no open relay, AUTH before MAIL on submission, a
recipient harvest cut off), the body through :class:`~nosend_runners.mail.delivery.
MessageSink` into Maildirs and the outbound queue with a ``Received:`` field (and
``Date:``/``Message-ID:`` on submission), 250 only once every copy is durable, and the
NOTIFY=SUCCESS report. For POP3: the mailbox's Maildir, or the outbound queue as a
multidrop mail drop for the configured queue-drop mailbox.

Must not: speak a protocol (the sessions do), hold a message in memory, or do disk work
on the event loop (it goes through ``ctx.run_blocking``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from nosend_proto import Credentials, Reply
from nosend_proto.received import received_header
from nosend_proto.smtp_events import MailParams, RcptParams
from nosend_runners.mail import policy
from nosend_runners.mail.delivery import (
    Delivered,
    HeaderTooLarge,
    MessageSink,
    deliver_notification,
)
from nosend_runners.mail.per_config import PerConfig
from nosend_runners.session import replies
from nosend_runners.session.backend import (
    BodyInfo,
    Maildrop,
    MaildropInUse,
    POP3Offer,
    SMTPOffer,
)
from nosend_runners.session.boundary import SessionContext, Stream
from nosend_runners.session.pop3 import serve_pop3
from nosend_runners.session.smtp import serve_smtp
from nosend_store.config import Config
from nosend_store.drop import DropSession
from nosend_store.dsn import DsnRecipient, build_dsn
from nosend_store.faults import describe, is_full
from nosend_store.maildir import LockBusy, MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, Recipient
from nosend_store.queue_drop import QueueDrop

__all__ = [
    "STORAGE_FULL",
    "MailBackend",
    "MailSMTPSession",
    "MailPOP3Session",
    "mail_backend",
    "open_maildrop",
    "run_smtp",
    "run_pop3",
]


#: The reply when the disk (or a quota) is full: RFC 5321 section 4.2.2 "452 insufficient
#: system storage", RFC 3463 section 3.4 X.3.1 "mail system full". Temporary: the client
#: keeps the message and tries again; other store failures answer 451 4.3.0.
STORAGE_FULL = Reply(452, "Insufficient system storage, try again later", "4.3.1")


@dataclass(slots=True)
class _Transaction:
    """The envelope of the open mail transaction (RFC 5321 section 3.3)."""

    sender: str
    params: MailParams
    accepted: list[str] = field(default_factory=list)  # forward paths, as given
    # Recipients that asked for NOTIFY=SUCCESS and are delivered here: report on them.
    success: list[DsnRecipient] = field(default_factory=list)
    mailboxes: dict[str, None] = field(default_factory=dict)  # ordered set
    remote: dict[str, Recipient] = field(default_factory=dict)


class MailBackend:
    """The default backend for one loaded ``mail.cfg``; get it with :func:`mail_backend`
    (made once per configuration)."""

    __slots__ = ("config",)

    def __init__(self, config: Config) -> None:
        self.config = config

    def smtp_session(self, ctx: SessionContext) -> MailSMTPSession:
        """A backend session for one SMTP connection."""
        return MailSMTPSession(self.config, ctx)

    def pop3_session(self, ctx: SessionContext) -> MailPOP3Session:
        """A backend session for one POP3 connection."""
        return MailPOP3Session(self.config, ctx)


_BACKENDS: PerConfig[MailBackend] = PerConfig(MailBackend)


def mail_backend(config: Config) -> MailBackend:
    """The :class:`MailBackend` of ``config`` (one per loaded configuration)."""
    return _BACKENDS.get(config)


class _Login:
    """Credentials checked against ``mail.cfg`` (both protocols)."""

    __slots__ = ("config", "ctx")

    def __init__(self, config: Config, ctx: SessionContext) -> None:
        self.config = config
        self.ctx = ctx

    def can_verify(self, credentials: Credentials) -> bool:
        """See :func:`nosend_runners.mail.policy.verifiable`."""
        return policy.verifiable(self.config, credentials)

    def authenticate(self, credentials: Credentials) -> str | None:
        """See :func:`nosend_runners.mail.policy.authenticate` (blocking)."""
        return policy.authenticate(self.config, credentials)


class MailSMTPSession(_Login):
    """One SMTP connection's policy and delivery (see the module docstring)."""

    __slots__ = ("tx", "rejected_recipients")

    def __init__(self, config: Config, ctx: SessionContext) -> None:
        super().__init__(config, ctx)
        self.tx: _Transaction | None = None
        self.rejected_recipients = 0  # over the whole connection: a harvest spans many

    def offer(self) -> SMTPOffer:
        """Limits and SASL mechanisms from ``mail.cfg``; cleartext AUTH per policy."""
        config = self.config
        server = config.server
        return SMTPOffer(
            max_recipients=server.max_recipients,
            max_message_size=server.max_message_size,
            auth_mechanisms=policy.sasl_mechanisms(config),
            cleartext_auth=policy.cleartext_auth_allowed(config, self.ctx.peer),
        )

    def mail_from(self, sender: str, params: MailParams, user: str | None) -> Reply:
        """Submission needs AUTH; a declared SIZE over the limit is refused now."""
        ctx = self.ctx
        refusal = policy.check_sender(
            self.config, ctx.service, authenticated=user is not None, size=params.size
        )
        if refusal is not None:
            ctx.log.warning("mail_rejected", sender=sender, result=refusal.code)
            return refusal
        self.tx = _Transaction(sender, params)
        return replies.SENDER_OK

    def rcpt_to(self, recipient: str, params: RcptParams, user: str | None) -> Reply:
        """Local mailboxes, aliases and (for clients that may relay) remote addresses."""
        ctx, tx = self.ctx, self.tx
        assert tx is not None  # the session asks only inside a transaction
        may_relay = policy.relay_allowed(self.config, ctx.peer, user is not None)
        decision = policy.check_recipient(self.config, recipient, may_relay=may_relay)
        if not decision.accepted:
            ctx.log.warning(
                "rcpt_rejected",
                sender=tx.sender,
                rcpt=recipient,
                result=f"{decision.reply.code} {decision.reply.enhanced}",
            )
            self.rejected_recipients += 1
            if self.rejected_recipients >= policy.MAX_REJECTED_RECIPIENTS:
                # A client guessing addresses (550 vs 250 tells which exist) is cut off,
                # as Postfix's smtpd_hard_error_limit does; 421 may end any reply.
                ctx.log.warning("harvest_cut_off", rejected=self.rejected_recipients)
                return Reply(421, f"{ctx.hostname} Too many refused recipients", "4.7.0")
            return decision.reply
        tx.accepted.append(recipient)
        for name in decision.mailboxes:
            tx.mailboxes[name] = None  # one copy per mailbox, however many addresses
        notify = params.notify or ()
        orcpt = f"{params.orcpt.addr_type};{params.orcpt.address}" if params.orcpt else None
        relayed = decision.remote == (recipient,) and not decision.mailboxes
        if not relayed:
            if "SUCCESS" in notify and self.may_report_to(tx.sender, may_relay):
                # RFC 3461 section 6.2.7: final delivery here ("delivered"), or an alias
                # fanned out to several places ("expanded"); reported once, by us.
                single = len(decision.mailboxes) == 1 and not decision.remote
                tx.success.append(
                    DsnRecipient(
                        final_recipient=recipient,
                        action="delivered" if single else "expanded",
                        status="2.0.0",
                        original_recipient=orcpt,
                    )
                )
            # The alias's remote targets do not report success again.
            notify = tuple(n for n in notify if n != "SUCCESS")
        for address in decision.remote:
            tx.remote.setdefault(address, Recipient(address, notify=notify, orcpt=orcpt))
        return decision.reply

    def may_report_to(self, sender: str, may_relay: bool) -> bool:
        """Whether a NOTIFY=SUCCESS report may go to ``sender``: a client that may send
        outside anyway, or a sender with a local mailbox. Otherwise a stranger could make
        us mail a forged remote sender (with the whole message under RET=FULL) over the
        site's paid link: reflection. The delivery itself is unaffected."""
        if not sender:
            return False
        if may_relay:
            return True
        resolution = self.config.resolve(sender)
        return resolution is not None and bool(resolution.mailboxes) and not resolution.remote

    def open_body(self, info: BodyInfo) -> _MailBody:
        """A :class:`MessageSink` for the open transaction, with our trace fields."""
        ctx, tx = self.ctx, self.tx
        assert tx is not None and tx.accepted
        now = datetime.fromtimestamp(ctx.clock()).astimezone()
        txid = f"{int(now.timestamp()):x}.{ctx.nonce()[:16]}"
        date = message_id = None
        if policy.requires_auth(ctx.service):
            # RFC 6409 section 8.2/8.3: the submission server may add these fields.
            date = f"Date: {format_datetime(now)}\r\n".encode()
            unique = ctx.nonce()[:16]  # the context's randomness: reproducible in tests
            message_id = f"Message-ID: <{txid}.{unique}@{ctx.hostname}>\r\n".encode()
        envelope = None
        if tx.remote:
            params = tx.params
            envelope = Envelope(
                tx.sender,
                tuple(tx.remote.values()),
                ret=params.ret,
                envid=params.envid,
                body=params.body,
                smtputf8=params.smtputf8,
            )
        peer = ctx.peer
        tls_info = " ".join(x for x in (peer.tls_version, peer.cipher) if x) or None
        trace = received_header(
            from_helo=info.helo or "unknown",
            peer_address=peer.address,
            by_host=ctx.hostname,
            protocol=info.protocol,
            when=now,
            id=txid,
            # RFC 5321 section 7.2: name the recipient only when there is just one.
            for_recipient=tx.accepted[0] if len(tx.accepted) == 1 else None,
            tls_info=tls_info if peer.tls else None,
        )
        sink = MessageSink(
            self.config,
            mailboxes=tuple(tx.mailboxes),
            envelope=envelope,
            trace=trace,
            date=date,
            message_id=message_id,
            return_path=tx.sender,  # RFC 5321 section 4.4: local copies are final delivery
            hostname=ctx.hostname,
        )
        # The files are created by the first write (often the commit itself): a small
        # message costs one worker-thread call; a failure to create them shows at the
        # end of the body as 451 4.3.0 (452 4.3.1 on a full disk), like any other store
        # failure.
        return _MailBody(self.config, ctx, tx, sink, txid, info.helo)

    def reset(self) -> None:
        """Forget the open transaction."""
        self.tx = None


class _MailBody:
    """The body sink of one transaction: a :class:`MessageSink` driven from the event
    loop through ``ctx.run_blocking``, failures turned into replies."""

    __slots__ = ("config", "ctx", "tx", "sink", "txid", "helo", "failed", "too_large", "full")

    def __init__(
        self,
        config: Config,
        ctx: SessionContext,
        tx: _Transaction,
        sink: MessageSink,
        txid: str,
        helo: str | None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.tx = tx
        self.sink: MessageSink | None = sink
        self.txid = txid
        self.helo = helo
        self.failed = False  # the files could not be opened or written, or too_large
        self.too_large = False  # the header block is over MAX_HEADER_BLOCK (submission)
        self.full = False  # the store failed for want of space (452 rather than 451)

    @property
    def size(self) -> int:
        """Body octets written so far."""
        return self.sink.size if self.sink is not None else 0

    async def write(self, data: bytes) -> None:
        """Write ``data`` in a worker thread; a failure is remembered for the reply."""
        sink = self.sink
        if sink is None or self.failed:
            return
        try:
            await self.ctx.run_blocking(sink.write, data)
        except HeaderTooLarge:
            self.too_large = self.failed = True
        except OSError as exc:
            # The one line for this failure (finish() answers without logging again).
            self.ctx.log.error("store_failed", step="write", id=self.txid, **describe(exc))
            self.failed = True
            self.full = is_full(exc)
            await self.abort()  # free the space the partial copies hold, now

    async def finish(self, data: bytes) -> Reply:
        """Commit (250 once every copy is durable) or answer what went wrong."""
        ctx, tx = self.ctx, self.tx
        if self.too_large:
            ctx.log.warning("message_rejected", reason="header-size", id=self.txid)
            await self.abort()
            return replies.HEADER_TOO_LARGE
        sink = self.sink
        if sink is None or self.failed:
            await self.abort()
            return STORAGE_FULL if self.full else replies.LOCAL_ERROR
        try:
            # finish() takes back what it wrote on any failure: nothing left to abort.
            delivered: Delivered = await ctx.run_blocking(sink.finish, data)
        except HeaderTooLarge:
            ctx.log.warning("message_rejected", reason="header-size", id=self.txid)
            return replies.HEADER_TOO_LARGE
        except OSError as exc:
            ctx.log.error("store_failed", step="commit", id=self.txid, **describe(exc))
            return STORAGE_FULL if is_full(exc) else replies.LOCAL_ERROR
        finally:
            self.sink = None
        if tx.success and tx.sender:
            await self.report_success(delivered)
        ctx.log.event(
            "accepted",
            id=self.txid,
            message_id=delivered.message_id,
            helo=self.helo,
            sender=tx.sender or "<>",
            size=delivered.size,
            rcpts=len(tx.accepted),
            local=len(delivered.keys),
            queued=len(tx.remote),
            queue_id=delivered.queue_id,
            result=250,
        )
        return Reply(250, f"Ok: queued as {self.txid}")

    async def abort(self) -> None:
        """Discard the uncommitted copies (idempotent)."""
        sink, self.sink = self.sink, None
        if sink is not None:
            await self.ctx.run_blocking(sink.abort)

    async def report_success(self, delivered: Delivered) -> None:
        """Send the NOTIFY=SUCCESS report (RFC 3461 section 4.1, RFC 3464) for what was
        delivered locally. The message is already safe: a failure here is only logged."""
        ctx = self.ctx
        try:
            await ctx.run_blocking(self._write_success_report, delivered)
        except (OSError, LookupError) as exc:
            ctx.log.error("dsn_failed", id=self.txid, **describe(exc))
            return
        ctx.log.event("dsn", id=self.txid, action="delivered", rcpts=len(self.tx.success))

    def _write_success_report(self, delivered: Delivered) -> None:
        # The report quotes the message: from a local copy, or, for an alias that only
        # forwards elsewhere, from the queued copy (the file never changes while queued).
        tx = self.tx
        if delivered.keys:
            name, key = next(iter(delivered.keys.items()))
            opened = MaildirMailbox(self.config.maildir_path(name)).open_message(key)
        elif delivered.queue_id is not None:
            queue = OutboundQueue(self.config.server.queue_dir)
            opened = queue.open_message(delivered.queue_id)
        else:
            return
        with opened as original:
            chunks = build_dsn(
                sender=tx.sender,
                recipients=tx.success,
                reporting_mta=self.ctx.hostname,
                now=self.ctx.clock(),
                envid=tx.params.envid,
                original=original,
                # RFC 3461 section 4.3: without RET=FULL a success report carries
                # only the header.
                headers_only=(tx.params.ret or "HDRS").upper() != "FULL",
            )
            deliver_notification(self.config, tx.sender, chunks, hostname=self.ctx.hostname)


class MailPOP3Session(_Login):
    """One POP3 connection's mailboxes (see the module docstring)."""

    __slots__ = ()

    def offer(self) -> POP3Offer:
        """Cleartext logins per policy; CRAM-MD5 and APOP when a shared secret exists."""
        config = self.config
        return POP3Offer(
            cleartext_auth=policy.cleartext_auth_allowed(config, self.ctx.peer),
            sasl_mechanisms=policy.sasl_mechanisms(config),
            apop_enabled=policy.apop_available(config),
        )

    def open_maildrop(self, user: str) -> Maildrop:
        """Lock and list the maildrop of mailbox ``user`` (blocking)."""
        try:
            return open_maildrop(self.config, user, self.ctx.hostname)
        except LockBusy as exc:
            raise MaildropInUse(user) from exc


def open_maildrop(config: Config, name: str, hostname: str | None = None) -> DropSession:
    """Lock and snapshot the maildrop of mailbox ``name`` (blocking).

    Its Maildir, or the outbound queue seen as a multidrop mail drop when ``name`` is
    the configured queue-drop mailbox (:func:`nosend_runners.mail.policy.queue_drop_mailbox`).
    Raises ``LockBusy`` when another session holds it.
    """
    if name == policy.queue_drop_mailbox(config):
        queue = OutboundQueue(config.server.queue_dir, hostname=hostname)
        return QueueDrop(queue).pop3_session()
    return MaildirMailbox(config.maildir_path(name)).pop3_session()


async def _refuse(stream: Stream, ctx: SessionContext) -> None:
    ctx.log.error("refused", reason="no configuration")
    await stream.send(replies.refusal(ctx.service, "unavailable"))


async def run_smtp(stream: Stream, ctx: SessionContext) -> None:
    """Serve one SMTP, submission or SMTPS session with the backend of ``ctx.config``."""
    config = ctx.config
    if not isinstance(config, Config):
        await _refuse(stream, ctx)
        return
    await serve_smtp(stream, ctx, mail_backend(config))


async def run_pop3(stream: Stream, ctx: SessionContext) -> None:
    """Serve one POP3 or POP3S session with the backend of ``ctx.config``."""
    config = ctx.config
    if not isinstance(config, Config):
        await _refuse(stream, ctx)
        return
    await serve_pop3(stream, ctx, mail_backend(config))
