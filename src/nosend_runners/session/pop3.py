"""The POP3 server session: the POP3 engine bound to policy, the Maildir store and a stream.

Owns: one POP3 or POP3S connection from greeting to close: credentials checked with
:mod:`nosend_runners.mail.policy` (with a delay after each failure and the server-wide
per-address lockout), the mailbox's session lock (a second login gets
``-ERR [IN-USE]``, RFC 2449 section 8), the listing handed to the engine (UIDLs and
wire sizes from the store), RETR/TOP read from the store (a message up to
``WHOLE_MAX`` in one piece, a larger one streamed in ``READ_CHUNK`` pieces, the next
messages read ahead up to ``READ_AHEAD``), deletions applied durably at QUIT (RFC 1939
section 6) and never on a dropped connection, STLS, timeouts and graceful shutdown, and
one log line per session event.

Must not: parse POP3 (the engine does), hold more than ``WHOLE_MAX`` + ``READ_AHEAD``
of stored content (a large message is never held whole), block the event loop (disk
work goes through ``ctx.run_blocking``), or log a secret.
"""

from __future__ import annotations

import logging
import os
import stat
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
from nosend_runners.mail import policy
from nosend_runners.session.boundary import SessionContext, ShutdownRequested, Stream
from nosend_runners.session.login import check_login
from nosend_store.config import Config
from nosend_store.drop import DropSession, MessageGone
from nosend_store.maildir import LockBusy, MaildirMailbox
from nosend_store.queue import OutboundQueue
from nosend_store.queue_drop import QueueDrop

__all__ = ["run", "open_maildrop", "POP3Session", "READ_CHUNK", "WHOLE_MAX", "READ_AHEAD"]

#: Bytes read from a stored message per worker-thread call while streaming RETR/TOP
#: (and the most of it held in memory at once) when it is larger than ``WHOLE_MAX``.
READ_CHUNK = 256 * 1024

#: A stored message up to this size is read whole by the call that opens it, into one
#: buffer of its exact size: one worker-thread trip per message, no over-allocation.
WHOLE_MAX = 1024 * 1024

#: Read-ahead for clients that RETR one message after the other (fetchmail, getmail,
#: mpop all do): the worker-thread call for RETR n also reads n+1, n+2, ... whole, up to
#: this many octets in all, and RETR of those is answered without another trip. Each
#: trip costs about 40 us of CPU in thread wake-ups plus its latency. Bounded memory:
#: read-ahead is held for the next messages only and dropped on any other RETR/TOP.
READ_AHEAD = 512 * 1024


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
        # Read-ahead: stored content of the next messages by number (see READ_AHEAD).
        self.ahead: dict[int, bytes] = {}

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
        check = await check_login(ctx, self.config, credentials)
        if check.locked_out:
            await self.write(
                conn.send(LoginRejected("too many failed logins, try again later", "AUTH"))
            )
            raise _Abort
        name = check.name
        if name is None:
            await self.write(conn.send(LoginRejected("authentication failed", "AUTH")))
            if check.now_locked:
                raise _Abort
            return
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
                    _open_and_read, drop, event.msgno, follow
                )
            except (MessageGone, KeyError, OSError) as exc:
                ctx.log.warning("retr_failed", msgno=event.msgno, error=type(exc).__name__)
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
                    chunk, eof = await ctx.run_blocking(_read_some, f, READ_CHUNK)
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

    def _read_ahead_after(self, msgno: int) -> tuple[int, ...]:
        """The messages after ``msgno`` worth reading ahead: not deleted, listed sizes
        within ``READ_AHEAD`` in all (the listing's wire sizes are at least the stored
        sizes of LF files; the worker checks the real sizes again)."""
        drop = self.drop
        assert drop is not None
        messages = drop.messages
        is_deleted = self.conn.is_deleted
        budget = READ_AHEAD
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


def _read_some(f: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` octets and whether the end was reached (then ``f`` is closed).

    Loops because a drop's reader may return short reads before its end."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        data = f.read(limit - size)
        if not data:
            f.close()
            return b"".join(parts), True  # one part: the same object, not a copy
        parts.append(data)
        size += len(data)
    return b"".join(parts), False


def _stored_size(f: BinaryIO) -> int | None:
    """The size of the file behind ``f`` now, or None when it is no plain file.

    Only a hint for the size of the first read: the end is always found by reading."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _open_and_read(
    drop: DropSession, msgno: int, follow: tuple[int, ...]
) -> tuple[BinaryIO | None, bytes, bool, list[tuple[int, bytes]]]:
    """Open ``msgno`` and read it whole if it is at most ``WHOLE_MAX`` (else its first
    ``READ_CHUNK``); then, if it was read whole, read ahead ``follow`` (see
    ``READ_AHEAD``). Returns the still-open file (None at the end), the content read,
    whether the end was reached, and the messages read ahead."""
    f = drop.open(msgno)
    try:
        size = _stored_size(f)
        # size + 1: the read that returns nothing proves the end in the same call.
        limit = size + 1 if size is not None and size < WHOLE_MAX else READ_CHUNK
        data, eof = _read_some(f, limit)
    except BaseException:
        f.close()
        raise
    if not eof:
        return f, data, False, []
    return None, data, True, _read_whole_messages(drop, follow)


def _read_whole_messages(drop: DropSession, numbers: tuple[int, ...]) -> list[tuple[int, bytes]]:
    """Read ahead: each of ``numbers`` whole while the total stays within READ_AHEAD.

    Stops at the first that cannot be read or does not fit; its RETR will open it again
    and report any error then."""
    out: list[tuple[int, bytes]] = []
    budget = READ_AHEAD
    for number in numbers:
        try:
            f = drop.open(number)
        except (MessageGone, KeyError, OSError):
            break
        try:
            size = _stored_size(f)
            if size is None or size > budget:
                break
            data, eof = _read_some(f, size + 1)
        except OSError:
            break
        finally:
            f.close()
        if not eof:
            break  # it grew since: leave it to its own RETR
        out.append((number, data))
        budget -= len(data)
    return out


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
