"""The SMTP server session: the SMTP engine bound to policy, delivery and a stream.

Owns: one SMTP, submission or SMTPS connection from greeting to close. The engine
(:mod:`nosend_proto.smtp_state`) parses and sequences; this module answers its events:
the sender and each recipient through :mod:`nosend_runners.mail.policy` (unknown local users
refused at RCPT time, no open relay, AUTH before MAIL on submission), credentials with
a delay after each failure and the server-wide per-address lockout, STARTTLS, the body
streamed through :class:`nosend_runners.mail.delivery.MessageSink` into Maildirs and the
outbound queue with a ``Received:`` field (and ``Date:``/``Message-ID:`` on submission),
250 only once every copy is durable, timeouts, graceful shutdown, and one log line per
session event.

Must not: parse SMTP, hold a message in memory, block the event loop (disk work and
password hashing go through ``ctx.run_blocking``), or log a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

import anyio

from nosend_proto.received import received_header
from nosend_proto.smtp_events import (
    NEED_DATA,
    AuthAttempt,
    AuthChallenge,
    Bdat,
    BdatChunkEnd,
    ConnectionClosed,
    DataChunk,
    DataRejected,
    DataStart,
    EndOfData,
    Hello,
    Help,
    MailFrom,
    MailParams,
    Noop,
    ProtocolViolation,
    Quit,
    RcptTo,
    Reply,
    Reset,
    Sentinel,
    SMTPEvent,
    StartTLS,
    Verify,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from nosend_runners.mail import policy
from nosend_runners.mail.delivery import (
    Delivered,
    HeaderTooLarge,
    MessageSink,
    deliver_notification,
)
from nosend_runners.session.boundary import SessionContext, ShutdownRequested, Stream
from nosend_runners.session.login import check_login
from nosend_store.config import Config
from nosend_store.dsn import DsnRecipient, build_dsn
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, Recipient

__all__ = ["run", "SMTPSession", "WRITE_BATCH"]

#: Body octets collected before one worker-thread write (fewer thread hops per message).
WRITE_BATCH = 256 * 1024

_LOCAL_ERROR = Reply(451, "Local error in processing, try again later", "4.3.0")
# Replies that never change, made (and validated) once rather than per command.
_GO_AHEAD = Reply(354, "End data with <CR><LF>.<CR><LF>")
_RESET_OK = Reply(250, "Reset OK")
_CANNOT_VRFY = Reply(252, "Cannot VRFY user, but will accept message and attempt delivery")
_OK = Reply(250, "OK")
_HELP = Reply(214, "See RFC 5321")
_NO_TLS = Reply(454, "TLS not available", "4.7.0")
_TLS_READY = Reply(220, "Ready to start TLS")
_SENDER_OK = Reply(250, "Sender OK")
_HEADER_TOO_LARGE = Reply(552, "Message header too large", "5.3.4")
_AUTH_INVALID = Reply(535, "Authentication credentials invalid", "5.7.8")
_AUTH_OK = Reply(235, "Authentication successful")
_AUTH_LOCKED_OUT = Reply(421, "Too many authentication failures, try again later", "4.7.0")


class _Abort(Exception):
    """End the session now (already answered and logged)."""


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
    sink: MessageSink | None = None
    failed: bool = False  # the sink could not be opened or written: reply 451
    too_large_header: bool = False
    pending: bytearray = field(default_factory=bytearray)
    txid: str = ""


@lru_cache(maxsize=64)
def _engine_config(
    hostname: str,
    max_recipients: int,
    max_message_size: int,
    tls_available: bool,
    tls_active: bool,
    auth_mechanisms: tuple[str, ...],
    auth_requires_tls: bool,
) -> SMTPServerConfig:
    """The engine's settings for a connection. A server sees a handful of combinations;
    building and validating one per connection cost more than the lookup."""
    return SMTPServerConfig(
        hostname=hostname,
        max_recipients=max_recipients,
        max_message_size=max_message_size,
        tls_available=tls_available,
        tls_active=tls_active,
        auth_mechanisms=auth_mechanisms,
        auth_requires_tls=auth_requires_tls,
    )


class SMTPSession:
    """One SMTP conversation; use :func:`run`."""

    def __init__(self, stream: Stream, ctx: SessionContext, config: Config) -> None:
        self.stream = stream
        self.ctx = ctx
        self.config = config
        peer = ctx.peer
        server = config.server
        self.conn = ServerConnection(
            _engine_config(
                ctx.hostname,
                server.max_recipients,
                server.max_message_size,
                stream.can_start_tls,
                peer.tls,
                policy.sasl_mechanisms(config),
                # RFC 4954 section 4: no AUTH (not even advertised) before TLS unless the
                # site allows cleartext for this peer; AUTH then gets 538 5.7.11.
                not policy.cleartext_auth_allowed(config, peer),
            ),
            nonce=ctx.nonce(),
        )
        self.out = bytearray()
        self.user: str | None = None
        self.tx: _Transaction | None = None
        self.close_after: Reply | None = None
        self._busy = False  # inside the guard's busy stretch (body and commit)
        self.messages = 0
        self.rejected_recipients = 0  # over the whole connection: a harvest spans many
        # When we began waiting for the command now arriving (None: none under way).
        self.command_started: float | None = None

    # -- wire ----------------------------------------------------------------------------

    async def flush(self) -> None:
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            await self.stream.send(data)

    async def receive(self) -> bytes:
        timeouts = self.ctx.timeouts
        if self.conn.state in (SMTPState.DATA, SMTPState.BDAT):
            # RFC 5321 section 4.5.3.2.5: the data-block timeout runs per read.
            self.command_started = None
            timeout = timeouts.data_block
        else:
            # Section 4.5.3.2.7: the command timeout covers the whole command, so a client
            # trickling a byte at a time cannot hold a connection past it (slowloris).
            now = self.ctx.monotonic()
            if self.command_started is None:
                self.command_started = now
            timeout = max(0.0, timeouts.command - (now - self.command_started))
        try:
            return await self.stream.receive(65536, timeout=timeout)
        except TimeoutError:
            # RFC 5321 section 4.5.3.2: the server may close after its timeout, with 421.
            self.ctx.log.event("timeout", state=self.conn.state.value, result="421")
            await self.final_reply(Reply(421, f"{self.ctx.hostname} Timeout, closing", "4.4.2"))
            raise _Abort from None
        except ShutdownRequested:
            self.ctx.log.event("shutdown", result="421")
            await self.final_reply(
                Reply(421, f"{self.ctx.hostname} Server shutting down, try later", "4.3.2")
            )
            raise _Abort from None

    async def final_reply(self, reply: Reply) -> None:
        """Send a 421 (allowed at any time, RFC 5321 section 3.8) and flush."""
        if self.conn.state is not SMTPState.CLOSED:
            self.out += self.conn.send(reply)
        await self.flush()

    # -- the conversation ----------------------------------------------------------------

    async def serve(self) -> None:
        conn = self.conn
        sync_handlers = _SYNC_HANDLERS
        self.out += conn.send(Reply(220, f"{self.ctx.hostname} ESMTP nosend ready"))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                await self.flush()
                conn.receive_data(await self.receive())
                continue
            assert not isinstance(event, Sentinel)
            self.command_started = None
            kind = type(event)
            if kind is DataChunk:
                await self.body(event.data)  # type: ignore[attr-defined]
                continue
            if kind is ConnectionClosed:
                await self.end_transaction()
                await self.flush()
                return
            if kind is Bdat:
                tx = self.tx
                # Only a BDAT the engine will accept opens the files: one in an EHLO
                # session, with recipients (else it answers 502/503/554 after the octets).
                if tx is not None and tx.accepted and conn.extended and tx.sink is None:
                    await self.begin_body()
                continue
            # Most commands need no waiting: answer those without a coroutine.
            handler = sync_handlers.get(kind)
            reply = handler(self, event) if handler is not None else await self.decide(event)
            self.out += conn.send(reply)
            if self.close_after is not None and conn.state is not SMTPState.CLOSED:
                self.out += conn.send(self.close_after)
            state = conn.state
            if state is SMTPState.TLS_PENDING:
                await self.flush()
                await self.start_tls()
            elif state is SMTPState.CLOSED:
                await self.flush()
                await self.end_transaction()
                return
            else:
                if conn.should_flush:
                    await self.flush()
                if self.tx is not None and state in _NO_TRANSACTION:
                    # The engine is the authority on whether a transaction is still open.
                    await self.end_transaction()

    async def decide(self, event: SMTPEvent) -> Reply:
        """The reply to one event (every event but DataChunk, Bdat, ConnectionClosed)."""
        handler = _SYNC_HANDLERS.get(type(event))
        if handler is not None:
            return handler(self, event)
        waiting = _ASYNC_HANDLERS.get(type(event))
        if waiting is None:
            raise AssertionError(f"unexpected SMTP event {event!r}")  # pragma: no cover
        return await waiting(self, event)

    # One method per event; the tables after the class map event types to them.

    async def on_hello(self, event: Hello) -> Reply:
        # A successful HELO/EHLO also resets the transaction (RFC 5321 section 4.1.4).
        await self.end_transaction()
        ctx = self.ctx
        ctx.log.event("helo", level=logging.DEBUG, helo=event.name, esmtp=event.extended)
        return Reply(250, f"{ctx.hostname} Hello [{ctx.peer.address}]")

    async def on_data_start(self, event: DataStart) -> Reply:
        await self.begin_body()
        return _GO_AHEAD

    async def on_bdat_chunk_end(self, event: BdatChunkEnd) -> Reply:
        tx = self.tx
        if tx is None or tx.failed or tx.too_large_header:
            await self.end_transaction()
            return _LOCAL_ERROR  # RFC 3030 section 2: a failed chunk ends the transaction
        return Reply(250, f"{event.size} octets received")

    async def on_end_of_data(self, event: EndOfData) -> Reply:
        return await self.commit()

    async def on_data_rejected(self, event: DataRejected) -> Reply:
        self.ctx.log.warning(
            "message_rejected",
            reason=event.reason,
            size=self.tx.sink.size if self.tx and self.tx.sink else None,
            result=event.reply.code,
        )
        await self.end_transaction()
        return event.reply

    async def on_reset(self, event: Reset) -> Reply:
        await self.end_transaction()
        return _RESET_OK

    def on_verify(self, event: Verify) -> Reply:
        # RFC 5321 section 3.5.3: no address harvesting; 252 promises nothing.
        return _CANNOT_VRFY

    def on_noop(self, event: Noop) -> Reply:
        return _OK

    def on_help(self, event: Help) -> Reply:
        return _HELP

    def on_starttls(self, event: StartTLS) -> Reply:
        if not self.stream.can_start_tls:
            return _NO_TLS
        return _TLS_READY

    def on_auth_challenge(self, event: AuthChallenge) -> Reply:
        return event.reply

    async def on_quit(self, event: Quit) -> Reply:
        await self.end_transaction()
        ctx = self.ctx
        ctx.log.event("quit", level=logging.DEBUG, messages=self.messages)
        return Reply(221, f"{ctx.hostname} closing connection")

    async def on_violation(self, event: ProtocolViolation) -> Reply:
        self.ctx.log.warning(
            "protocol_error", reason=event.reason, result=event.reply.code, close=event.close
        )
        if event.close:
            await self.end_transaction()
        return event.reply

    # -- envelope ------------------------------------------------------------------------

    def mail_from(self, event: MailFrom) -> Reply:
        ctx = self.ctx
        refusal = policy.check_sender(
            self.config, ctx.service, authenticated=self.user is not None, size=event.params.size
        )
        if refusal is not None:
            ctx.log.warning("mail_rejected", sender=event.reverse_path, result=refusal.code)
            return refusal
        self.tx = _Transaction(event.reverse_path, event.params)
        return _SENDER_OK

    def rcpt_to(self, event: RcptTo) -> Reply:
        ctx, tx = self.ctx, self.tx
        assert tx is not None  # the engine sequences RCPT after an accepted MAIL
        may_relay = policy.relay_allowed(self.config, ctx.peer, self.user is not None)
        decision = policy.check_recipient(self.config, event.forward_path, may_relay=may_relay)
        if not decision.accepted:
            ctx.log.warning(
                "rcpt_rejected",
                sender=tx.sender,
                rcpt=event.forward_path,
                result=f"{decision.reply.code} {decision.reply.enhanced}",
            )
            self.rejected_recipients += 1
            if self.rejected_recipients >= policy.MAX_REJECTED_RECIPIENTS:
                # A client guessing addresses (550 vs 250 tells which exist) is cut off,
                # as Postfix's smtpd_hard_error_limit does; 421 may end any reply.
                ctx.log.warning("harvest_cut_off", rejected=self.rejected_recipients)
                return Reply(421, f"{ctx.hostname} Too many refused recipients", "4.7.0")
            return decision.reply
        tx.accepted.append(event.forward_path)
        for name in decision.mailboxes:
            tx.mailboxes[name] = None  # one copy per mailbox, however many addresses
        params = event.params
        notify = params.notify or ()
        orcpt = f"{params.orcpt.addr_type};{params.orcpt.address}" if params.orcpt else None
        relayed = decision.remote == (event.forward_path,) and not decision.mailboxes
        if not relayed:
            if "SUCCESS" in notify and self.may_report_to(tx.sender, may_relay):
                # RFC 3461 section 6.2.7: final delivery here ("delivered"), or an alias
                # fanned out to several places ("expanded"); reported once, by us.
                single = len(decision.mailboxes) == 1 and not decision.remote
                tx.success.append(
                    DsnRecipient(
                        final_recipient=event.forward_path,
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

    # -- body ----------------------------------------------------------------------------

    def _trace(self, txid: str, now: datetime) -> bytes:
        tx, peer = self.tx, self.ctx.peer
        assert tx is not None
        tls_info = " ".join(x for x in (peer.tls_version, peer.cipher) if x) or None
        return received_header(
            from_helo=self.conn.helo_name or "unknown",
            peer_address=peer.address,
            by_host=self.ctx.hostname,
            protocol=self.conn.received_protocol,
            when=now,
            id=txid,
            # RFC 5321 section 7.2: name the recipient only when there is just one.
            for_recipient=tx.accepted[0] if len(tx.accepted) == 1 else None,
            tls_info=tls_info if peer.tls else None,
        )

    async def begin_body(self) -> None:
        """Open the temporary files for the message (at 354, or at the first BDAT)."""
        ctx, tx = self.ctx, self.tx
        if tx is None or not tx.accepted:
            return
        if tx.sink is not None:
            # Left over from a BDAT chunk the engine refused: start afresh.
            stale, tx.sink = tx.sink, None
            tx.pending.clear()
            await ctx.run_blocking(stale.abort)
        if not self._busy:
            # A graceful shutdown lets this message and its commit finish.
            ctx.guard.enter_busy()
            self._busy = True
        now = datetime.fromtimestamp(ctx.clock()).astimezone()
        tx.txid = f"{int(now.timestamp()):x}.{ctx.nonce()[:16]}"
        date = message_id = None
        if policy.requires_auth(ctx.service):
            # RFC 6409 section 8.2/8.3: the submission server may add these fields.
            date = f"Date: {format_datetime(now)}\r\n".encode()
            unique = ctx.nonce()[:16]  # the context's randomness: reproducible in tests
            message_id = f"Message-ID: <{tx.txid}.{unique}@{ctx.hostname}>\r\n".encode()
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
        sink = MessageSink(
            self.config,
            mailboxes=tuple(tx.mailboxes),
            envelope=envelope,
            trace=self._trace(tx.txid, now),
            date=date,
            message_id=message_id,
            return_path=tx.sender,  # RFC 5321 section 4.4: local copies are final delivery
            hostname=ctx.hostname,
        )
        # The files are created by the first write (often the commit itself): a small
        # message costs one worker-thread call; a failure to create them shows at the
        # end of the body as 451 4.3.0, like any other store failure.
        tx.sink = sink

    async def body(self, data: bytes) -> None:
        tx = self.tx
        if tx is None or tx.sink is None or tx.failed or tx.too_large_header:
            return  # the engine keeps reading to the end; the reply says what happened
        tx.pending += data
        if len(tx.pending) >= WRITE_BATCH:
            await self._write_pending()

    async def _write_pending(self) -> None:
        tx = self.tx
        assert tx is not None and tx.sink is not None
        chunk = bytes(tx.pending)
        tx.pending.clear()
        try:
            await self.ctx.run_blocking(tx.sink.write, chunk)
        except HeaderTooLarge:
            tx.too_large_header = True
        except OSError as exc:
            self.ctx.log.error("store_failed", step="write", error=type(exc).__name__, id=tx.txid)
            tx.failed = True

    async def commit(self) -> Reply:
        ctx, tx = self.ctx, self.tx
        assert tx is not None
        try:
            if tx.too_large_header:
                ctx.log.warning("message_rejected", reason="header-size", id=tx.txid)
                return _HEADER_TOO_LARGE
            if tx.sink is None or tx.failed:
                return _LOCAL_ERROR
            last = bytes(tx.pending)
            tx.pending.clear()
            try:
                delivered: Delivered = await ctx.run_blocking(tx.sink.finish, last)
            except HeaderTooLarge:
                ctx.log.warning("message_rejected", reason="header-size", id=tx.txid)
                return _HEADER_TOO_LARGE
            except OSError as exc:
                ctx.log.error("store_failed", step="commit", error=type(exc).__name__, id=tx.txid)
                return _LOCAL_ERROR
            tx.sink = None  # committed: nothing to abort
            self.messages += 1
            if tx.success and tx.sender:
                await self.report_success(tx, delivered)
            ctx.log.event(
                "accepted",
                id=tx.txid,
                message_id=delivered.message_id,
                helo=self.conn.helo_name,
                sender=tx.sender or "<>",
                size=delivered.size,
                rcpts=len(tx.accepted),
                local=len(delivered.keys),
                queued=len(tx.remote),
                queue_id=delivered.queue_id,
                result=250,
            )
            return Reply(250, f"Ok: queued as {tx.txid}")
        finally:
            await self.end_transaction()

    async def report_success(self, tx: _Transaction, delivered: Delivered) -> None:
        """Send the NOTIFY=SUCCESS report (RFC 3461 section 4.1, RFC 3464) for what was
        delivered locally. The message is already safe: a failure here is only logged."""
        ctx = self.ctx
        try:
            await ctx.run_blocking(self._write_success_report, tx, delivered)
        except (OSError, LookupError) as exc:
            ctx.log.error("dsn_failed", id=tx.txid, error=type(exc).__name__)
            return
        ctx.log.event("dsn", id=tx.txid, action="delivered", rcpts=len(tx.success))

    def _write_success_report(self, tx: _Transaction, delivered: Delivered) -> None:
        # The report quotes the message: from a local copy, or, for an alias that only
        # forwards elsewhere, from the queued copy (the file never changes while queued).
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

    def end_transaction_now(self) -> None:
        """``end_transaction`` for a transaction with no body files (nothing to wait
        for)."""
        assert self.tx is None or self.tx.sink is None
        self.tx = None
        self._leave_busy()

    async def end_transaction(self) -> None:
        """Drop the open transaction: discard an uncommitted body, leave ``busy()``."""
        tx, self.tx = self.tx, None
        if tx is not None and tx.sink is not None:
            sink = tx.sink
            tx.sink = None
            with anyio.CancelScope(shield=True):
                await self.ctx.run_blocking(sink.abort)
        self._leave_busy()

    def _leave_busy(self) -> None:
        if self._busy:
            self._busy = False
            self.ctx.guard.leave_busy()

    # -- TLS and AUTH --------------------------------------------------------------------

    async def start_tls(self) -> None:
        await self.end_transaction()
        await self.stream.start_tls()
        self.conn.start_tls_done()
        # RFC 3207 section 4.2: everything learnt before TLS is forgotten.
        self.user = None
        peer = self.ctx.peer
        self.ctx.log.event("starttls", tls_version=peer.tls_version, cipher=peer.cipher)

    async def authenticate(self, event: AuthAttempt) -> Reply:
        ctx = self.ctx
        credentials = event.credentials
        check = await check_login(ctx, self.config, credentials)
        if check.locked_out:
            return _AUTH_LOCKED_OUT
        name = check.name
        if name is None:
            if check.now_locked:
                self.close_after = _AUTH_LOCKED_OUT
            return _AUTH_INVALID
        self.user = name
        ctx.log.bind(user=name)
        ctx.log.event("auth", mechanism=credentials.mechanism, result=235)
        return _AUTH_OK


# A tuple: membership tests identity first, where an enum set would hash in Python.
_NO_TRANSACTION = (SMTPState.READY, SMTPState.CONNECTED)

# Event type -> the session method that answers it. Looking the type up once costs less
# than a chain of isinstance tests, and the sync table lets serve() answer most commands
# without creating a coroutine.
_SYNC_HANDLERS: dict[type, Callable[[SMTPSession, Any], Reply]] = {
    MailFrom: SMTPSession.mail_from,
    RcptTo: SMTPSession.rcpt_to,
    Verify: SMTPSession.on_verify,
    Noop: SMTPSession.on_noop,
    Help: SMTPSession.on_help,
    StartTLS: SMTPSession.on_starttls,
    AuthChallenge: SMTPSession.on_auth_challenge,
}
_ASYNC_HANDLERS: dict[type, Callable[[SMTPSession, Any], Awaitable[Reply]]] = {
    Hello: SMTPSession.on_hello,
    DataStart: SMTPSession.on_data_start,
    BdatChunkEnd: SMTPSession.on_bdat_chunk_end,
    EndOfData: SMTPSession.on_end_of_data,
    DataRejected: SMTPSession.on_data_rejected,
    Reset: SMTPSession.on_reset,
    AuthAttempt: SMTPSession.authenticate,
    Quit: SMTPSession.on_quit,
    ProtocolViolation: SMTPSession.on_violation,
}


async def run(stream: Stream, ctx: SessionContext) -> None:
    """Serve one SMTP, submission or SMTPS session on ``stream``."""
    config = ctx.config
    if not isinstance(config, Config):
        ctx.log.error("refused", reason="no configuration")
        await stream.send(b"421 4.3.0 Service not available, try again later\r\n")
        return
    session = SMTPSession(stream, ctx, config)
    try:
        await session.serve()
    except _Abort:
        pass
    finally:
        if session.tx is not None and session.tx.sink is not None:
            with anyio.CancelScope(shield=True):
                await session.end_transaction()
        else:
            session.end_transaction_now()
