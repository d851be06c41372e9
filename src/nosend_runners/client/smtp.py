"""Drives the sans-IO SMTP client engine over one :class:`UpstreamConnection`.

Owns: the I/O loop around :class:`nosend_proto.smtp_client.ClientConnection` -- the
greeting, EHLO, STARTTLS (RFC 3207) and AUTH (RFC 4954) in lock step, then any number of
transactions whose bodies are streamed from a file in bounded chunks (never a whole
message in memory), then QUIT; reading replies while a long pipelined batch is written
(RFC 2920 section 3.1: a server whose output buffer is full stops reading, so a writer
that never reads deadlocks); and a time limit per message.

Must not: choose messages, decide what a reply means for the queue (the caller's
``on_result`` does), retry, open connections, or log (a secret never reaches this
module's error texts: it is handed to the engine and nowhere else).

How the two phases read. Until the session is ready everything is lock step and this
module reads the connection itself (nothing may be read ahead of the TLS handshake:
RFC 3207 section 4.2). For the transactions a reader task moves whatever the server
sends into a bounded in-memory channel, and the writer (the caller's task) feeds the
channel into the engine between the pieces it writes, so replies are consumed however
long the batch. The engine is only ever called from the writer's task.

Time limits. The connection's own read/write timeout guards the handshake. During the
transactions each message gets ``time_limit`` seconds from the moment its MAIL FROM is
handed to the engine until its :class:`MessageResult`; waits and writes are bounded by
the earliest limit of the messages in flight. When one is exceeded :class:`MessageTimedOut`
is raised naming that message; the connection is then unusable (close it): the server
discards a transaction whose body it did not receive whole, so nothing is half-delivered.
With nothing in flight (or no finite limit) the connection's idle timeout bounds a wait,
and its expiry is handled as a dropped link.

Checkpoints. An :class:`Outgoing` with ``checkpoint`` set is begun only once every
message before it has its result: the caller marks long bodies so, and a call that
drops during one never leaves an earlier message accepted but unconfirmed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nosend_proto import LocalProtocolError, RemoteProtocolError
from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    AuthFailed,
    AuthSucceeded,
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Extensions,
    Greeting,
    MessageResult,
    Quit,
    Ready,
    Reply,
    SendBody,
    SessionFailed,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_runners.client.connection import UpstreamConnection, UpstreamError

__all__ = [
    "SMTPClientError",
    "MessageTimedOut",
    "Login",
    "Outgoing",
    "SessionInfo",
    "SMTPClientSession",
    "WRITE_PIECE",
]

#: Body bytes handed to the engine (and written) at a time. Small enough that a write
#: makes progress within seconds even on a 2,400 bit/s link, so time limits stay precise.
WRITE_PIECE = 16 * 1024

# Reads the reader task may hold before the writer consumes them (each at most 64 KiB).
_INBOX = 64


class SMTPClientError(Exception):
    """The session could not be opened or went wrong; the text names host and reason
    (a server's reply when there is one), never a secret."""


class MessageTimedOut(Exception):
    """A message exceeded its time limit; ``outgoing`` is the message. Close the
    connection: the session cannot go on."""

    def __init__(self, outgoing: Outgoing, limit: float) -> None:
        super().__init__(f"message took over {limit:.0f} s")
        self.outgoing = outgoing
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Login:
    """Who to authenticate as (RFC 4954). ``mechanisms``: allowed SASL mechanisms; the
    engine takes the strongest the server offers among them."""

    user: str
    secret: str = field(repr=False)
    mechanisms: tuple[str, ...] = ("CRAM-MD5", "PLAIN", "LOGIN")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send: the transaction, how to read its body, its time limit.

    ``body()`` opens the stored message afresh and yields its chunks (any line ends; the
    engine sends CRLF only). ``key`` is the caller's, handed back with the result.
    ``size``: octets as stored, for progress. ``time_limit``: seconds (inf: none).
    ``checkpoint``: before this message starts, wait until every message sent before it
    has its result (one round trip), so that a link dropping during this (long) body
    cannot leave an earlier message delivered but unconfirmed, to be sent again.
    """

    key: object
    transaction: Transaction
    body: Callable[[], Iterator[bytes]]
    size: int
    time_limit: float = math.inf
    checkpoint: bool = False


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the opened session offers: the greeting, EHLO's extensions, TLS and the
    SASL mechanism used (None: no AUTH)."""

    greeting: Reply | None
    extensions: Extensions
    tls: bool
    mechanism: str | None


ResultCallback = Callable[[Outgoing, MessageResult], None]
BytesCallback = Callable[[Outgoing, int], None]

# What the reader task hands over: bytes, or b"" for the server's close, or an error.
_Item = bytes | UpstreamError


def _is_closed(engine: ClientConnection) -> bool:
    return engine.state is ClientState.CLOSED


def _reply_text(reply: Reply | None) -> str:
    if reply is None:
        return "no reply"
    return f"{reply.code} {reply.text}".strip()


class SMTPClientSession:
    """One SMTP session to a smarthost over ``upstream``.

    ``await open(login)`` runs greeting, EHLO, STARTTLS when the connection is not TLS
    yet and ``starttls`` is set (``require_tls``: fail rather than go on in clear), and
    AUTH. ``await send(messages, on_result)`` sends them all (pipelined when offered)
    and calls ``on_result`` once per message, as its outcome is known. ``await quit()``
    ends the session politely (``send`` may already have sent QUIT).
    """

    def __init__(self, upstream: UpstreamConnection, config: SMTPClientConfig) -> None:
        self.upstream = upstream
        self.engine = ClientConnection(config)
        self.info: SessionInfo | None = None
        self._greeting: Reply | None = None
        self._closed = False

    def _where(self) -> str:
        return f"{self.upstream.host}:{self.upstream.port}"

    # -- phase one: lock step ----------------------------------------------------------

    async def _flush(self) -> None:
        await self.upstream.send(self.engine.data_to_send())

    async def _next(self) -> object:
        """The next event, reading the connection directly when the engine needs data."""
        while True:
            try:
                event = self.engine.next_event()
            except RemoteProtocolError as exc:
                raise SMTPClientError(f"{self._where()}: protocol error: {exc}") from None
            if event is not NEED_DATA:
                return event
            await self._flush()
            self.engine.receive_data(await self.upstream.receive())

    async def open(self, login: Login | None) -> SessionInfo:
        """Greeting, EHLO, STARTTLS and AUTH; raises :class:`SMTPClientError`."""
        engine = self.engine
        while True:
            event = await self._next()
            if isinstance(event, Greeting):
                self._greeting = event.reply
            elif isinstance(event, TLSHandshakeNeeded):
                await self._flush()
                await self.upstream.start_tls()
                engine.start_tls_done()
            elif isinstance(event, SessionFailed):
                await self._drain_quit()
                if event.reason == "tls-unavailable":
                    raise SMTPClientError(
                        f"{self._where()}: the server offers no STARTTLS "
                        f"({_reply_text(event.reply) if event.reply else 'not offered'}); "
                        "refusing to log in or send in clear")
                raise SMTPClientError(
                    f"{self._where()}: session refused ({event.reason}): "
                    f"{_reply_text(event.reply)}")
            elif isinstance(event, ConnectionClosed):
                self._closed = True
                raise SMTPClientError(
                    f"{self._where()}: the server closed the session: {_reply_text(event.reply)}")
            elif isinstance(event, Ready):
                if login is None:
                    return self._opened(None)
                await self.upstream.send(engine.send(Authenticate(
                    login.user, login.secret, login.mechanisms,
                    host=self.upstream.host, port=self.upstream.port)))
            elif isinstance(event, AuthSucceeded):
                assert engine.state is ClientState.READY
                return self._opened(event.mechanism)
            elif isinstance(event, AuthFailed):
                await self.quit()
                why = {
                    "tls-required": "refusing to send the password without TLS",
                    "no-mechanism": "none of the allowed SASL mechanisms is offered "
                    f"(server offers {' '.join(engine.extensions.auth) or 'none'})",
                    "not-offered": "the server offers no AUTH",
                }.get(event.reason, _reply_text(event.reply))
                raise SMTPClientError(f"{self._where()}: login failed: {why}")

    def _opened(self, mechanism: str | None) -> SessionInfo:
        self.info = SessionInfo(
            self._greeting, self.engine.extensions, self.engine.tls_active, mechanism)
        return self.info

    async def _drain_quit(self) -> None:
        """After the engine queued QUIT itself: send it, read until the close."""
        try:
            with anyio.move_on_after(self.upstream.timeout):
                while not self._closed:
                    event = await self._next()
                    if isinstance(event, ConnectionClosed):
                        self._closed = True
        except (UpstreamError, SMTPClientError, LocalProtocolError):
            pass

    async def quit(self) -> None:
        """Send QUIT (if the session is still open) and wait for the close; never raises."""
        if self._closed:
            return
        try:
            if self.engine.state is ClientState.READY:
                await self.upstream.send(self.engine.send(Quit()))
        except (UpstreamError, LocalProtocolError, RemoteProtocolError):
            self._closed = True
            return
        await self._drain_quit()

    # -- phase two: transactions -------------------------------------------------------

    async def send(
        self,
        messages: Iterable[Outgoing],
        on_result: ResultCallback,
        *,
        on_bytes: BytesCallback | None = None,
        quit_after: bool = True,
    ) -> None:
        """Send every message; ``on_result`` gets each :class:`MessageResult`.

        With PIPELINING the next transaction follows the previous body at once; QUIT
        follows the last one (``quit_after``). If the connection is lost, messages in
        flight get the engine's ``connection-lost`` result (nothing was delivered for
        them) and this returns normally; messages not yet begun get no result. A message
        over its time limit raises :class:`MessageTimedOut` (close the connection; the
        messages after it have no result). A server that breaks the protocol raises
        :class:`SMTPClientError`.
        """
        if self.engine.state is not ClientState.READY:
            raise LocalProtocolError("open() the session first")
        upstream = self.upstream
        send_items, receive_items = anyio.create_memory_object_stream[_Item](_INBOX)
        idle = upstream.timeout
        # The per-message limits replace the connection's idle timeout: a body on a slow
        # link may keep the server silent far longer than any fixed idle bound.
        upstream.timeout = math.inf
        pump = _Pump(self, iter(messages), receive_items, on_result, on_bytes, quit_after, idle)
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader, send_items)
                try:
                    await pump.run()
                except Exception as exc:  # noqa: BLE001 -- raised below, not as a group
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            upstream.timeout = idle
            receive_items.close()
        self._closed = self._closed or _is_closed(self.engine)
        if failure is not None:
            raise failure

    async def _reader(self, items: MemoryObjectSendStream[_Item]) -> None:
        async with items:
            while True:
                try:
                    data = await self.upstream.receive()
                except UpstreamError as exc:
                    await items.send(exc)
                    return
                await items.send(data)
                if not data:
                    return


class _Pump:
    """The writer's side of :meth:`SMTPClientSession.send` (one call, one pump)."""

    def __init__(
        self,
        session: SMTPClientSession,
        pending: Iterator[Outgoing],
        inbox: MemoryObjectReceiveStream[_Item],
        on_result: ResultCallback,
        on_bytes: BytesCallback | None,
        quit_after: bool,
        idle: float,
    ) -> None:
        self.session = session
        self.engine = session.engine
        self.upstream = session.upstream
        self.pending = pending
        self.inbox = inbox
        self.on_result = on_result
        self.on_bytes = on_bytes
        self.quit_after = quit_after
        self.idle = idle
        self.inflight: list[tuple[Outgoing, float]] = []  # (message, deadline)
        self.eof = False
        self.exhausted = False
        self.upcoming: Outgoing | None = None  # taken from ``pending``, not yet begun

    def _deadline(self) -> tuple[float, Outgoing | None]:
        """The earliest deadline in flight, or the idle bound when nothing is."""
        if self.inflight:
            outgoing, limit = min(self.inflight, key=lambda pair: pair[1])
            if limit != math.inf:
                return limit, outgoing
        # Nothing in flight, or no limit given: the connection's idle bound, whose
        # expiry is treated as a dropped link (never an unbounded wait).
        return anyio.current_time() + self.idle, None

    def _feed(self, item: _Item) -> None:
        if self.eof:
            return
        if isinstance(item, UpstreamError) or not item:
            self.eof = True
            self.engine.receive_data(b"")
        else:
            self.engine.receive_data(item)

    def _take_waiting(self) -> None:
        """Feed whatever the reader already holds, without waiting."""
        while not self.eof:
            try:
                item = self.inbox.receive_nowait()
            except anyio.WouldBlock:
                return
            except anyio.EndOfStream:
                self._feed(b"")
                return
            self._feed(item)

    async def _write(self, data: bytes) -> None:
        """Write under the earliest deadline; a lost connection becomes the engine's EOF."""
        if not data or self.eof:
            return
        limit, culprit = self._deadline()
        lost = False
        with anyio.move_on_after(max(0.0, limit - anyio.current_time())) as scope:
            try:
                await self.upstream.send(data)
            except UpstreamError:
                lost = True
        if lost:
            await self._collect_after_loss()
        elif scope.cancelled_caught:
            self._timed_out(culprit)

    def _timed_out(self, culprit: Outgoing | None) -> None:
        if culprit is None:
            self._feed(b"")  # idle with nothing in flight: treat as a dropped link
            return
        raise MessageTimedOut(culprit, culprit.time_limit)

    async def _wait(self) -> None:
        """Wait for the server (bounded), then feed all that is there."""
        limit, culprit = self._deadline()
        item: _Item = b""
        with anyio.move_on_after(max(0.0, limit - anyio.current_time())) as scope:
            try:
                item = await self.inbox.receive()
            except anyio.EndOfStream:
                item = b""
        if scope.cancelled_caught:
            self._timed_out(culprit)
            return
        self._feed(item)
        self._take_waiting()

    def _owner(self, transaction: Transaction) -> Outgoing:
        for outgoing, _ in self.inflight:
            if outgoing.transaction is transaction:
                return outgoing
        raise AssertionError("a result for a transaction never sent")

    async def run(self) -> None:
        engine = self.engine
        while True:
            try:
                event = engine.next_event()
            except RemoteProtocolError as exc:
                raise SMTPClientError(
                    f"{self.session._where()}: protocol error: {exc}") from None
            if event is NEED_DATA:
                await self._write(engine.data_to_send())
                if engine.state is ClientState.READY and not self.eof:
                    if not self.exhausted:
                        if self.upcoming is None:
                            self.upcoming = next(self.pending, None)
                        outgoing = self.upcoming
                        if outgoing is not None and outgoing.checkpoint and self.inflight:
                            await self._wait()  # the earlier results first (a checkpoint)
                            continue
                        self.upcoming = None
                        if outgoing is not None:
                            limit = anyio.current_time() + outgoing.time_limit
                            self.inflight.append((outgoing, limit))
                            await self._write(engine.send(outgoing.transaction))
                            continue
                        self.exhausted = True
                        if self.quit_after:
                            await self._write(engine.send(Quit()))
                            continue
                    if not self.quit_after and not self.inflight:
                        return
                if not self.eof:
                    await self._wait()
            elif isinstance(event, SendBody):
                await self._stream_body(self._owner(event.transaction))
                if engine.state is ClientState.BODY and not self.eof:
                    await self._write(engine.send(EndOfBody()))
            elif isinstance(event, MessageResult):
                outgoing = self._owner(event.transaction)
                self.inflight = [p for p in self.inflight if p[0] is not outgoing]
                self.on_result(outgoing, event)
            elif isinstance(event, ConnectionClosed):
                # Messages never handed to the engine get no result: the caller still
                # holds them and knows they were not sent.
                return

    async def _stream_body(self, outgoing: Outgoing) -> None:
        engine = self.engine
        done = 0
        chunks = outgoing.body()
        try:
            for chunk in chunks:
                for start in range(0, len(chunk), WRITE_PIECE):
                    piece = chunk[start : start + WRITE_PIECE]
                    await self._write(engine.send(BodyChunk(piece)))
                    self._take_waiting()
                    done += len(piece)
                    if self.on_bytes is not None:
                        self.on_bytes(outgoing, done)
                    if engine.state is not ClientState.BODY or self.eof:
                        return  # the connection ended under us (421 or EOF)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    async def _collect_after_loss(self) -> None:
        """A write failed: take what the server said before the loss, then the EOF.

        Replies that arrived before the connection broke (a 250 for an earlier message)
        still count; the reader ends soon after a broken write, bounded here anyway.
        """
        with anyio.move_on_after(5):
            while not self.eof:
                try:
                    item = await self.inbox.receive()
                except anyio.EndOfStream:
                    break
                self._feed(item)
        self._feed(b"")
