"""The POP3 server session: the POP3 engine bound to a backend and a stream.

Owns: one POP3 or POP3S connection from greeting to close, on the wire side: credentials
through the shared login guard (a delay after each failure and the server-wide
per-client lockout) and the backend session
(:class:`~nosend_runners.session.backend.POP3BackendSession`), the maildrop it opens for
the user (a second login gets ``-ERR [IN-USE]``, RFC 2449 section 8), the listing handed
to the engine, RETR/TOP read through :mod:`nosend_store.message_reader` (whole messages
in one worker-thread trip, large ones streamed, the next ones read ahead), deletions
applied at QUIT (RFC 1939 section 6) and never on a dropped connection, STLS, timeouts,
graceful shutdown, and one log line per session event.

Must not: parse POP3 (the engine does), decide whose mailbox is whose (the backend
does; nosend's own is :mod:`nosend_runners.mail.backend`), hold more than
``WHOLE_MAX`` + ``READ_AHEAD`` of stored content (a large message is never held whole),
block the event loop (disk work goes through ``ctx.run_blocking``), or log a secret.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

import anyio

from nosend_proto.pop3_events import (
    NEED_DATA,
    NEED_FLUSH,
    AuthAttempt,
    ConnectionClosed,
    Greeting,
    LoginAccepted,
    LoginRejected,
    MessageChunk,
    MessageEnd,
    MessageInfo,
    MessageUnavailable,
    POP3ServerConfig,
    Quit,
    Retrieve,
    StartTLS,
    TLSReady,
    TLSRefused,
    TooManyErrors,
    Top,
    UpdateApplied,
    UpdateFailed,
)
from nosend_proto.pop3_state import ServerConnection
from nosend_runners.session import replies
from nosend_runners.session.backend import (
    Maildrop,
    MaildropInUse,
    POP3Backend,
    POP3BackendSession,
)
from nosend_runners.session.boundary import SessionContext, SessionFunc, Stream
from nosend_runners.session.login import check_login
from nosend_runners.session.wire import Abort, WireSession, serve_until_done
from nosend_store import message_reader
from nosend_store.drop import MessageGone
from nosend_store.faults import describe

__all__ = ["POP3Session", "serve_pop3", "pop3_session"]


class POP3Session(WireSession):
    """One POP3 conversation; use :func:`serve_pop3` or :func:`pop3_session`."""

    def __init__(self, stream: Stream, ctx: SessionContext, backend: POP3BackendSession) -> None:
        super().__init__(stream, ctx)
        self.backend = backend
        offer = backend.offer()
        self.conn = ServerConnection(
            POP3ServerConfig(
                hostname=ctx.hostname,
                tls_available=stream.can_start_tls,
                tls_active=ctx.peer.tls,
                # RFC 2595 section 2.1: no cleartext passwords without TLS unless the
                # backend allows it for this peer; APOP and CRAM-MD5 stay available.
                auth_requires_tls=not offer.cleartext_auth,
                sasl_mechanisms=offer.sasl_mechanisms,
                apop_enabled=offer.apop_enabled,
            ),
            nonce=ctx.nonce(),
        )
        self.drop: Maildrop | None = None
        self.user: str | None = None
        # Read-ahead: stored content of the next messages by number (message_reader).
        self.ahead: dict[int, bytes] = {}

    # -- wire ----------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        if data:
            # The engine answers most commands itself, so a reply (not an event) is what
            # marks a command as done and restarts the autologout timer, and says the
            # engine made something of the input.
            self.command_started = None
            self.silent = 0
            await self.stream.send(data)

    async def flush(self) -> None:
        await self.write(self.conn.data_to_send())

    def receive_timeout(self) -> float:
        # The autologout timer covers a whole command (RFC 1939 section 3).
        return self.command_time_left(self.ctx.timeouts.pop3_idle)

    async def timed_out(self) -> None:
        # RFC 1939 section 3: autologout, without entering UPDATE.
        self.ctx.log.event("timeout", result="-ERR")
        await self.write(replies.POP3_TIMEOUT)

    async def shutting_down(self) -> None:
        self.ctx.log.event("shutdown", result="-ERR")
        await self.write(replies.POP3_SHUTDOWN)

    async def flooded(self) -> None:
        self.ctx.log.warning("input_flood", octets=self.silent, result="-ERR")
        await self.write(replies.POP3_FLOODED)

    # -- the conversation ----------------------------------------------------------------

    async def serve(self) -> None:
        conn = self.conn
        await self.write(conn.send(Greeting(f"{self.ctx.hostname} POP3 server ready")))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                await self.flush()
                conn.receive_data(await self.receive())
            elif event is NEED_FLUSH:
                await self.flush()
            elif isinstance(event, AuthAttempt):
                await self.login(event)
            elif isinstance(event, Retrieve | Top):
                await self.send_message(event)
            elif isinstance(event, Quit):
                await self.update(event)
            elif isinstance(event, StartTLS):
                await self.start_tls()
            elif isinstance(event, TooManyErrors):
                self.ctx.log.warning(
                    "too_many_errors",
                    reason=event.reason,
                    errors=event.errors,
                    auth_failures=event.auth_failures,
                )
                if event.auth_failures:
                    await self.pause(self.ctx.auth_failures.failure_delay(self.ctx.peer.address))
                await self.flush()  # the engine's answer to the last one
                # Then say why the connection ends, rather than just dropping it.
                await self.write(replies.POP3_TOO_MANY_ERRORS)
                return
            elif isinstance(event, ConnectionClosed):
                await self.flush()
                if event.peer_closed:
                    self.ctx.log.event("peer_closed", user=self.user)
                return

    async def login(self, event: AuthAttempt) -> None:
        ctx, conn = self.ctx, self.conn
        credentials = event.credentials
        check = await check_login(ctx, self.backend, credentials, self.pause)
        if check.locked_out:
            await self.write(conn.send(LoginRejected(replies.LOCKED_OUT_TEXT, "AUTH")))
            raise Abort
        name = check.name
        if name is None:
            await self.write(conn.send(LoginRejected("authentication failed", "AUTH")))
            if check.now_locked:
                raise Abort
            return
        try:
            await ctx.run_blocking(self._open_drop, name)
        except MaildropInUse:
            ctx.log.warning("login_in_use", user=name, mechanism=credentials.mechanism)
            await self.write(conn.send(LoginRejected("maildrop already locked", "IN-USE")))
            return
        except OSError as exc:
            ctx.log.error("login_failed", user=name, **describe(exc))
            await self.write(conn.send(LoginRejected("cannot open the maildrop", "SYS/TEMP")))
            return
        assert self.drop is not None
        self.user = name
        ctx.log.bind(user=name)
        listing = [MessageInfo(m.size, m.uidl) for m in self.drop.messages]
        ctx.log.event(
            "login",
            mechanism=credentials.mechanism,
            messages=len(listing),
            octets=sum(m.size_octets for m in listing),
        )
        await self.write(conn.send(LoginAccepted(listing)))

    def _open_drop(self, name: str) -> None:
        # Runs in a worker thread; storing the session here (not in the awaiting task)
        # means a cancellation after the lock was taken still releases it in ``close``.
        self.drop = self.backend.open_maildrop(name)

    async def send_message(self, event: Retrieve | Top) -> None:
        ctx, conn, drop = self.ctx, self.conn, self.drop
        assert drop is not None
        f: BinaryIO | None = None
        ahead = self.ahead
        chunk = ahead.pop(event.msgno, None)
        if chunk is not None:
            eof = True  # read whole ahead of time, file already closed
        else:
            ahead.clear()  # not reading in order: forget the rest
            follow = self._read_ahead_after(event.msgno) if isinstance(event, Retrieve) else ()
            try:
                # One worker-thread call opens the message and reads all of it (up to
                # WHOLE_MAX, else its first READ_CHUNK), closing it at the end, and
                # reads ahead the messages in ``follow``.
                f, chunk, eof, extra = await ctx.run_blocking(
                    message_reader.open_and_read, drop, event.msgno, follow
                )
            except (MessageGone, KeyError, OSError) as exc:
                ctx.log.warning("retr_failed", msgno=event.msgno, **describe(exc))
                await self.write(
                    conn.send(MessageUnavailable("message cannot be read", "SYS/TEMP"))
                )
                return
            ahead.update(extra)
        try:
            while True:
                out = conn.send(MessageChunk(chunk)) if chunk else b""
                if eof or not conn.wants_content:
                    # The end, or TOP has all the lines it needs (RFC 1939 s7): the last
                    # piece and the terminating ".CRLF" leave in one send.
                    await self.write(
                        out + conn.send(MessageEnd()) if out else conn.send(MessageEnd())
                    )
                    break
                await self.write(out)
                assert f is not None  # not at the end: the file is still open
                try:
                    chunk, eof = await ctx.run_blocking(
                        message_reader.read_some, f, message_reader.READ_CHUNK
                    )
                except OSError as exc:
                    ctx.log.error("retr_failed", msgno=event.msgno, **describe(exc))
                    raise Abort from None  # part of it was sent: only closing is honest
        finally:
            if f is not None and not eof:
                with anyio.CancelScope(shield=True):
                    await ctx.run_blocking(f.close)
        ctx.log.event(
            "retr" if isinstance(event, Retrieve) else "top",
            level=logging.DEBUG,
            msgno=event.msgno,
            size=event.message.size_octets,
        )

    def _read_ahead_after(self, msgno: int) -> tuple[int, ...]:
        """The messages after ``msgno`` worth reading ahead: not deleted, listed sizes
        within ``message_reader.READ_AHEAD`` in all (the listing's wire sizes are at
        least the stored sizes of LF files; the worker checks the real sizes again)."""
        drop = self.drop
        assert drop is not None
        messages = drop.messages
        is_deleted = self.conn.is_deleted
        budget = message_reader.READ_AHEAD
        out: list[int] = []
        for number in range(msgno + 1, len(messages) + 1):
            if is_deleted(number):
                continue
            size = messages[number - 1].size
            if size > budget:
                break
            out.append(number)
            budget -= size
        return tuple(out)

    async def update(self, event: Quit) -> None:
        self.ahead.clear()
        ctx, conn, drop = self.ctx, self.conn, self.drop
        assert drop is not None
        for msgno in event.msgnos:
            drop.mark_deleted(msgno)
        try:
            removed = await ctx.run_blocking(drop.commit)
        except OSError as exc:
            ctx.log.error("update_failed", deleted=len(event.msgnos), **describe(exc))
            await self.write(conn.send(UpdateFailed()))
            return
        finally:
            self.drop = None  # commit() released the lock whatever happened
        ctx.log.event("quit", deleted=removed, result="+OK")
        await self.write(conn.send(UpdateApplied()))

    async def start_tls(self) -> None:
        if not self.stream.can_start_tls:
            await self.write(self.conn.send(TLSRefused()))
            return
        await self.write(self.conn.send(TLSReady()))
        await self.stream.start_tls()
        peer = self.ctx.peer
        self.ctx.log.event("starttls", tls_version=peer.tls_version, cipher=peer.cipher)

    async def close(self) -> None:
        """Release the maildrop lock without deleting anything (idempotent)."""
        drop, self.drop = self.drop, None
        if drop is not None:
            with anyio.CancelScope(shield=True):
                await self.ctx.run_blocking(drop.close)


async def serve_pop3(stream: Stream, ctx: SessionContext, backend: POP3Backend) -> None:
    """Serve one POP3 (or POP3S) session on ``stream`` with ``backend``."""
    await serve_until_done(POP3Session(stream, ctx, backend.pop3_session(ctx)))


def pop3_session(backend: POP3Backend) -> SessionFunc:
    """The session coroutine that serves POP3 with ``backend``, for any runner."""

    async def run(stream: Stream, ctx: SessionContext) -> None:
        await serve_pop3(stream, ctx, backend)

    return run
