"""The SMTP server session: the SMTP engine bound to a backend and a stream.

Owns: one SMTP, submission or SMTPS connection from greeting to close, on the wire side.
The engine (:mod:`nosend_proto.smtp_state`) parses and sequences; this module answers its
events: the sender and each recipient through the backend session
(:class:`~nosend_runners.session.backend.SMTPBackendSession`), credentials through the
shared login guard (a delay after each failure and the server-wide per-client lockout),
STARTTLS, the body streamed in batches into the backend's
:class:`~nosend_runners.session.backend.BodySink` inside the graceful-shutdown guard,
timeouts, flushing, and one log line per session event.

Must not: parse SMTP, decide who may send or receive (the backend does; nosend's own is
:mod:`nosend_runners.mail.backend`), hold a message in memory, block the event loop
(password hashing goes through ``ctx.run_cpu_bound``), or log a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import anyio

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
from nosend_runners.session import replies, wire
from nosend_runners.session.backend import BodyInfo, BodySink, SMTPBackend, SMTPBackendSession
from nosend_runners.session.boundary import SessionContext, SessionFunc, Stream
from nosend_runners.session.login import check_login
from nosend_runners.session.wire import WireSession, serve_until_done

__all__ = ["SMTPSession", "WRITE_BATCH", "serve_smtp", "smtp_session"]

#: Body octets collected before one worker-thread write (fewer thread hops per message).
WRITE_BATCH = 256 * 1024


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


class SMTPSession(WireSession):
    """One SMTP conversation; use :func:`serve_smtp` or :func:`smtp_session`."""

    def __init__(self, stream: Stream, ctx: SessionContext, backend: SMTPBackendSession) -> None:
        super().__init__(stream, ctx)
        self.backend = backend
        offer = backend.offer()
        self.conn = ServerConnection(
            _engine_config(
                ctx.hostname,
                offer.max_recipients,
                offer.max_message_size,
                stream.can_start_tls,
                ctx.peer.tls,
                offer.auth_mechanisms,
                # RFC 4954 section 4: no AUTH (not even advertised) before TLS unless the
                # backend allows cleartext for this peer; AUTH then gets 538 5.7.11.
                not offer.cleartext_auth,
            ),
            nonce=ctx.nonce(),
        )
        self.out = bytearray()
        self.user: str | None = None
        # Recipients accepted in the open transaction (None: no transaction open).
        self.accepted: int | None = None
        self.sink: BodySink | None = None
        self.pending = bytearray()  # body octets not yet handed to the sink
        self.close_after: Reply | None = None
        self.max_message_size = offer.max_message_size
        self._busy = False  # inside the guard's busy stretch (body and commit)
        self.messages = 0

    # -- wire ----------------------------------------------------------------------------

    async def flush(self) -> None:
        if self.out:
            data = bytes(self.out)
            self.out.clear()
            await self.stream.send(data)

    def receive_timeout(self) -> float:
        if self.conn.state in (SMTPState.DATA, SMTPState.BDAT):
            # RFC 5321 section 4.5.3.2.5: the data-block timeout runs per read.
            self.command_started = None
            return self.ctx.timeouts.data_block
        # Section 4.5.3.2.7: the command timeout covers the whole command.
        return self.command_time_left(self.ctx.timeouts.command)

    async def timed_out(self) -> None:
        # RFC 5321 section 4.5.3.2: the server may close after its timeout, with 421.
        self.ctx.log.event("timeout", state=self.conn.state.value, result="421")
        await self.final_reply(replies.smtp_timeout(self.ctx.hostname))

    async def shutting_down(self) -> None:
        self.ctx.log.event("shutdown", result="421")
        await self.final_reply(replies.smtp_shutdown(self.ctx.hostname))

    def silent_limit(self) -> int:
        if self.conn.state in (SMTPState.DATA, SMTPState.BDAT):
            # A body past the size limit (or a refused BDAT chunk) is read and thrown
            # away until its end: at most a whole message's worth more, plus the margin.
            return self.max_message_size + wire.MAX_SILENT_INPUT
        return wire.MAX_SILENT_INPUT

    async def flooded(self) -> None:
        self.ctx.log.warning(
            "input_flood", state=self.conn.state.value, octets=self.silent, result="421"
        )
        await self.final_reply(replies.smtp_flooded(self.ctx.hostname))

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
            self.silent = 0  # the engine made something of the input
            kind = type(event)
            if kind is DataChunk:
                await self.body(event.data)  # type: ignore[union-attr]
                continue
            if kind is ConnectionClosed:
                await self.end_transaction()
                await self.flush()
                return
            if kind is Bdat:
                # Only a BDAT the engine will accept opens the sink: one in an EHLO
                # session, with recipients (else it answers 502/503/554 after the octets).
                if self.accepted and conn.extended and self.sink is None:
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
                if self.accepted is not None and state in _NO_TRANSACTION:
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
        return replies.GO_AHEAD

    async def on_bdat_chunk_end(self, event: BdatChunkEnd) -> Reply:
        sink = self.sink
        if self.accepted is None:
            await self.end_transaction()
            return replies.LOCAL_ERROR
        if sink is not None and sink.failed:
            # RFC 3030 section 2: a failed chunk ends the transaction. The sink answers
            # its failure in finish() (452 4.3.1 for a full disk), as after DATA.
            self.sink = None
            self.pending.clear()
            try:
                reply = await sink.finish(b"")
            finally:
                await self.end_transaction()
            return reply if reply.code >= 400 else replies.LOCAL_ERROR
        return Reply(250, f"{event.size} octets received")

    async def on_end_of_data(self, event: EndOfData) -> Reply:
        return await self.commit()

    async def on_data_rejected(self, event: DataRejected) -> Reply:
        self.ctx.log.warning(
            "message_rejected",
            reason=event.reason,
            size=self.sink.size if self.sink is not None else None,
            result=event.reply.code,
        )
        await self.end_transaction()
        return event.reply

    async def on_reset(self, event: Reset) -> Reply:
        await self.end_transaction()
        return replies.RESET_OK

    def on_verify(self, event: Verify) -> Reply:
        # RFC 5321 section 3.5.3: no address harvesting; 252 promises nothing.
        return replies.CANNOT_VRFY

    def on_noop(self, event: Noop) -> Reply:
        return replies.OK

    def on_help(self, event: Help) -> Reply:
        return replies.HELP

    def on_starttls(self, event: StartTLS) -> Reply:
        if not self.stream.can_start_tls:
            return replies.NO_TLS
        return replies.TLS_READY

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
        reply = self.backend.mail_from(event.reverse_path, event.params, self.user)
        if 200 <= reply.code < 300:
            self.accepted = 0
        return reply

    def rcpt_to(self, event: RcptTo) -> Reply:
        assert self.accepted is not None  # the engine sequences RCPT after MAIL
        reply = self.backend.rcpt_to(event.forward_path, event.params, self.user)
        if 200 <= reply.code < 300:
            self.accepted += 1
        return reply

    # -- body ----------------------------------------------------------------------------

    async def begin_body(self) -> None:
        """Open the backend's sink for the message (at 354, or at the first BDAT)."""
        if not self.accepted:
            return
        if self.sink is not None:
            # Left over from a BDAT chunk the engine refused: start afresh.
            stale, self.sink = self.sink, None
            self.pending.clear()
            await stale.abort()
        if not self._busy:
            # A graceful shutdown lets this message and its commit finish.
            self.ctx.guard.enter_busy()
            self._busy = True
        conn = self.conn
        self.sink = self.backend.open_body(
            BodyInfo(conn.helo_name, conn.received_protocol, self.user)
        )

    async def body(self, data: bytes) -> None:
        sink = self.sink
        if sink is None or sink.failed:
            return  # the engine keeps reading to the end; the reply says what happened
        pending = self.pending
        pending += data
        if len(pending) >= WRITE_BATCH:
            chunk = bytes(pending)
            pending.clear()
            await sink.write(chunk)

    async def commit(self) -> Reply:
        sink, self.sink = self.sink, None
        try:
            if sink is None:
                return replies.LOCAL_ERROR
            last = bytes(self.pending)
            self.pending.clear()
            # The sink commits, or answers its failure, and leaves nothing to abort.
            reply = await sink.finish(last)
            if 200 <= reply.code < 300:
                self.messages += 1
            return reply
        finally:
            await self.end_transaction()

    def end_transaction_now(self) -> None:
        """``end_transaction`` for a transaction with no open sink (nothing to wait
        for)."""
        assert self.sink is None
        if self.accepted is not None:
            self.accepted = None
            self.backend.reset()
        self._leave_busy()

    async def end_transaction(self) -> None:
        """Drop the open transaction: discard an uncommitted body, leave ``busy()``."""
        sink, self.sink = self.sink, None
        if sink is not None:
            self.pending.clear()
            with anyio.CancelScope(shield=True):
                await sink.abort()
        self.end_transaction_now()

    def _leave_busy(self) -> None:
        if self._busy:
            self._busy = False
            self.ctx.guard.leave_busy()

    async def close(self) -> None:
        if self.sink is not None:
            with anyio.CancelScope(shield=True):
                await self.end_transaction()
        else:
            self.end_transaction_now()

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
        check = await check_login(ctx, self.backend, credentials, self.pause)
        if check.locked_out:
            return replies.AUTH_LOCKED_OUT
        name = check.name
        if name is None:
            if check.now_locked:
                self.close_after = replies.AUTH_LOCKED_OUT
            return replies.AUTH_INVALID
        self.user = name
        ctx.log.bind(user=name)
        ctx.log.event("auth", mechanism=credentials.mechanism, result=235)
        return replies.AUTH_OK


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


async def serve_smtp(stream: Stream, ctx: SessionContext, backend: SMTPBackend) -> None:
    """Serve one SMTP, submission or SMTPS session on ``stream`` with ``backend``."""
    await serve_until_done(SMTPSession(stream, ctx, backend.smtp_session(ctx)))


def smtp_session(backend: SMTPBackend) -> SessionFunc:
    """The session coroutine that serves SMTP with ``backend``, for any runner (the
    anyio server's session factory, inetd, the in-memory harness)."""

    async def run(stream: Stream, ctx: SessionContext) -> None:
        await serve_smtp(stream, ctx, backend)

    return run
