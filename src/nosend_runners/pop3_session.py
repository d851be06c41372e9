"""The POP3 server session: the POP3 engine bound to policy, the Maildir store and a stream.

Owns: one POP3 or POP3S connection from greeting to close: credentials checked with
:mod:`nosend_runners.policy` (with a delay after each failure and the server-wide
per-address lockout), the mailbox's session lock (a second login gets
``-ERR [IN-USE]``, RFC 2449 section 8), the listing handed to the engine (UIDLs and
wire sizes from the store), RETR/TOP streamed from the store in chunks, deletions
applied durably at QUIT (RFC 1939 section 6) and never on a dropped connection, STLS,
timeouts and graceful shutdown, and one log line per session event.

Must not: parse POP3 (the engine does), hold a whole message in memory, block the event
loop (disk work goes through ``ctx.run_blocking``), or log a secret.
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
    GreetingRefused,
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
from nosend_runners import policy
from nosend_runners.transport import SessionContext, ShutdownRequested, Stream
from nosend_store.config import Config
from nosend_store.drop import DropSession, MessageGone
from nosend_store.maildir import LockBusy, MaildirMailbox
from nosend_store.queue import OutboundQueue
from nosend_store.queue_drop import QueueDrop

__all__ = ["run", "open_maildrop", "POP3Session", "READ_CHUNK"]

#: Bytes read from a stored message per worker-thread call while streaming RETR/TOP
#: (and the most of it held in memory at once).
READ_CHUNK = 256 * 1024


class _Abort(Exception):
    """End the session now (the reason was already logged and answered)."""


class POP3Session:
    """One POP3 conversation; use :func:`run`."""

    def __init__(self, stream: Stream, ctx: SessionContext, config: Config) -> None:
        self.stream = stream
        self.ctx = ctx
        self.config = config
        peer = ctx.peer
        self.conn = ServerConnection(
            POP3ServerConfig(
                hostname=ctx.hostname,
                tls_available=stream.can_start_tls,
                tls_active=peer.tls,
                # RFC 2595 section 2.1: no cleartext passwords without TLS unless the
                # site allows it for this peer; APOP and CRAM-MD5 stay available.
                auth_requires_tls=not policy.cleartext_auth_allowed(config, peer),
                sasl_mechanisms=policy.sasl_mechanisms(config),
                apop_enabled=policy.apop_available(config),
            ),
            nonce=ctx.nonce(),
        )
        self.drop: DropSession | None = None
        self.user: str | None = None
        # When we began waiting for the command now arriving (None: none under way).
        self.command_started: float | None = None

    # -- wire ----------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        if data:
            # The engine answers most commands itself, so a reply (not an event) is what
            # marks a command as done and restarts the autologout timer.
            self.command_started = None
            await self.stream.send(data)

    async def flush(self) -> None:
        await self.write(self.conn.data_to_send())

    async def receive(self) -> bytes:
        """Next bytes from the client; raises :class:`_Abort` after answering a timeout
        or a shutdown (RFC 1939 section 3: autologout without UPDATE)."""
        # The timer covers a whole command, so a client trickling a byte at a time
        # cannot keep a connection (and the mailbox lock) past it.
        now = self.ctx.monotonic()
        if self.command_started is None:
            self.command_started = now
        timeout = max(0.0, self.ctx.timeouts.pop3_idle - (now - self.command_started))
        try:
            return await self.stream.receive(65536, timeout=timeout)
        except TimeoutError:
            self.ctx.log.event("timeout", result="-ERR")
            await self.write(b"-ERR [SYS/TEMP] autologout timer expired, closing\r\n")
            raise _Abort from None
        except ShutdownRequested:
            self.ctx.log.event("shutdown", result="-ERR")
            await self.write(b"-ERR [SYS/TEMP] server shutting down, try again later\r\n")
            raise _Abort from None

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
                    await anyio.sleep(self.ctx.auth_failures.failure_delay(self.ctx.peer.address))
                await self.flush()
                return
            elif isinstance(event, ConnectionClosed):
                await self.flush()
                if event.peer_closed:
                    self.ctx.log.event("peer_closed", user=self.user)
                return

    async def login(self, event: AuthAttempt) -> None:
        ctx, conn = self.ctx, self.conn
        credentials = event.credentials
        address = ctx.peer.address
        tracker = ctx.auth_failures
        if tracker.blocked(address):
            ctx.log.warning(
                "auth_locked_out", user=credentials.username, mechanism=credentials.mechanism
            )
            await self.write(
                conn.send(LoginRejected("too many failed logins, try again later", "AUTH"))
            )
            raise _Abort
        if not policy.verifiable(self.config, credentials):
            ctx.log.event(
                "auth_failed",
                user=credentials.username,
                mechanism=credentials.mechanism,
                reason="no shared secret for this mechanism",
            )
            await self.write(conn.send(LoginRejected("authentication failed", "AUTH")))
            return
        name = await ctx.run_blocking(policy.authenticate, self.config, credentials)
        if name is None:
            tracker.record_failure(address)
            # RFC 1939 section 4 / RFC 4954 section 4: make guessing slow.
            await anyio.sleep(tracker.failure_delay(address))
            ctx.log.warning(
                "auth_failed",
                user=credentials.username,
                mechanism=credentials.mechanism,
                failures=tracker.failures(address),
            )
            await self.write(conn.send(LoginRejected("authentication failed", "AUTH")))
            if tracker.blocked(address):
                ctx.log.warning("auth_locked_out", user=credentials.username)
                raise _Abort
            return
        tracker.record_success(address)
        try:
            await ctx.run_blocking(self._open_drop, name)
        except LockBusy:
            ctx.log.warning("login_in_use", user=name, mechanism=credentials.mechanism)
            await self.write(conn.send(LoginRejected("maildrop already locked", "IN-USE")))
            return
        except OSError as exc:
            ctx.log.error("login_failed", user=name, error=type(exc).__name__)
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
        self.drop = open_maildrop(self.config, name, self.ctx.hostname)

    async def send_message(self, event: Retrieve | Top) -> None:
        ctx, conn, drop = self.ctx, self.conn, self.drop
        assert drop is not None
        try:
            # One worker-thread call opens the message and reads its first READ_CHUNK
            # octets (all of a typical message, closing it again).
            f, chunk, eof = await ctx.run_blocking(_open_and_read, drop, event.msgno)
        except (MessageGone, KeyError, OSError) as exc:
            ctx.log.warning("retr_failed", msgno=event.msgno, error=type(exc).__name__)
            await self.write(conn.send(MessageUnavailable("message cannot be read", "SYS/TEMP")))
            return
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
                try:
                    chunk, eof = await ctx.run_blocking(_read_some, f)
                except OSError as exc:
                    ctx.log.error("retr_failed", msgno=event.msgno, error=type(exc).__name__)
                    raise _Abort from None  # part of it was sent: only closing is honest
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

    async def update(self, event: Quit) -> None:
        ctx, conn, drop = self.ctx, self.conn, self.drop
        assert drop is not None
        for msgno in event.msgnos:
            drop.mark_deleted(msgno)
        try:
            removed = await ctx.run_blocking(drop.commit)
        except OSError as exc:
            ctx.log.error("update_failed", deleted=len(event.msgnos), error=type(exc).__name__)
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


def _read_some(f: BinaryIO) -> tuple[bytes, bool]:
    """Up to READ_CHUNK octets and whether the end was reached (then ``f`` is closed).

    Loops because a drop's reader may return short reads before its end."""
    parts: list[bytes] = []
    size = 0
    while size < READ_CHUNK:
        data = f.read(READ_CHUNK - size)
        if not data:
            f.close()
            return b"".join(parts), True
        parts.append(data)
        size += len(data)
    return b"".join(parts), False


def _open_and_read(drop: DropSession, msgno: int) -> tuple[BinaryIO, bytes, bool]:
    f = drop.open(msgno)
    try:
        data, eof = _read_some(f)
    except BaseException:
        f.close()
        raise
    return f, data, eof


def open_maildrop(config: Config, name: str, hostname: str | None = None) -> DropSession:
    """Lock and snapshot the maildrop of mailbox ``name`` (blocking).

    Its Maildir, or the outbound queue seen as a multidrop mail drop when ``name`` is
    the configured queue-drop mailbox (:func:`nosend_runners.policy.queue_drop_mailbox`).
    Raises ``LockBusy`` when another session holds it.
    """
    if name == policy.queue_drop_mailbox(config):
        queue = OutboundQueue(config.server.queue_dir, hostname=hostname)
        return QueueDrop(queue).pop3_session()
    return MaildirMailbox(config.maildir_path(name)).pop3_session()


async def run(stream: Stream, ctx: SessionContext) -> None:
    """Serve one POP3 (or POP3S) session on ``stream``; see the module docstring."""
    config = ctx.config
    if not isinstance(config, Config):
        ctx.log.error("refused", reason="no configuration")
        conn = ServerConnection(POP3ServerConfig(hostname=ctx.hostname), nonce=ctx.nonce())
        await stream.send(conn.send(GreetingRefused("service not available, try again later")))
        return
    session = POP3Session(stream, ctx, config)
    try:
        await session.serve()
    except _Abort:
        pass
    finally:
        await session.close()
