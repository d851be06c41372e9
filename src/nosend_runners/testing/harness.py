"""An in-memory harness that drives complete server sessions without sockets.

Owns: an in-memory byte-stream pair, a :class:`Harness` that runs one session coroutine
(``async def run(stream, ctx)``, see :mod:`nosend_runners.session.boundary`) against a client
you script byte by byte, helpers to read SMTP and POP3 replies, and a transcript of
everything both sides said. Must not: know SMTP or POP3 beyond splitting replies into
lines for the reader helpers; the session under test owns every byte it sends.

The server side is the same :class:`~nosend_runners.serve.streams.AnyioStream` the socket
runners use, laid over an in-memory pipe, so timeouts, graceful shutdown and even real
TLS (STARTTLS, implicit TLS with OpenSSL over the memory pipe) behave as on a socket.
The session runs through :func:`~nosend_runners.serve.connection.run_connection`, as under
``nosend serve`` and ``nosend inetd``: a test of a session here is a test of all three.

Example (any anyio backend)::

    from nosend_runners.testing.harness import Harness
    from nosend_runners.mail.backend import run_smtp as smtp_session

    async with Harness(smtp_session, "smtp", config=config) as h:
        greeting = await h.read_reply()          # SMTPReply(code=220, ...)
        await h.send(b"EHLO client.example\\r\\n")
        ehlo = await h.read_reply()
        assert "PIPELINING" in ehlo.lines
        await h.send(b"QUIT\\r\\n")
        assert (await h.read_reply()).code == 221
        await h.wait_closed()
    print(h.transcript_text())                   # C: / S: lines

Or in one call: ``output = await run_script(pop3_session, "pop3", b"CAPA\\r\\nQUIT\\r\\n",
config=config)`` sends the bytes, closes the client's side and returns all the session
wrote.

The pipes are unbounded (the harness never blocks a ``send``), so a test may pipeline
as much as it likes before reading; memory is the test's own concern.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.tls import TLSStream

from nosend_runners.serve.connection import run_connection
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.log import SessionLog
from nosend_runners.serve.streams import AnyioStream
from nosend_runners.session.boundary import (
    PeerInfo,
    ServerState,
    SessionContext,
    SessionFunc,
    SessionGuard,
    Timeouts,
)

__all__ = [
    "MemoryByteStream",
    "memory_stream_pair",
    "SMTPReply",
    "Harness",
    "HarnessClosed",
    "run_script",
    "harness_state",
]

#: The peer a harness session sees unless told otherwise (TEST-NET-1, RFC 5737): not a
#: trusted network in any sensible configuration.
DEFAULT_PEER = PeerInfo("192.0.2.10", 40000, local_address="192.0.2.1", local_port=25)


class HarnessClosed(Exception):
    """The session closed the connection before the expected reply arrived."""


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory, unbounded, ordered byte pipe (see :func:`memory_stream_pair`).

    ``receive(max_bytes)`` returns at most ``max_bytes``; the rest of a sent block waits
    for the next call, as in a socket's kernel buffer.
    """

    def __init__(
        self, outgoing: MemoryObjectSendStream[bytes], incoming: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._out = outgoing
        self._in = incoming
        self._pending = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Bytes from the other end; raises ``anyio.EndOfStream`` once it sent EOF."""
        if not self._pending:
            self._pending = await self._in.receive()
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        """Queue ``item`` for the other end (never blocks)."""
        if item:
            await self._out.send(bytes(item))

    async def send_eof(self) -> None:
        """Tell the other end no more bytes come (its ``receive`` raises EndOfStream)."""
        await self._out.aclose()

    async def aclose(self) -> None:
        """Close both directions."""
        await self._out.aclose()
        await self._in.aclose()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected in-memory byte streams: ``(client_end, server_end)``."""
    c2s_send, c2s_recv = anyio.create_memory_object_stream[bytes](math.inf)
    s2c_send, s2c_recv = anyio.create_memory_object_stream[bytes](math.inf)
    return MemoryByteStream(c2s_send, s2c_recv), MemoryByteStream(s2c_send, c2s_recv)


@dataclass(frozen=True, slots=True)
class SMTPReply:
    """One SMTP reply as read by :meth:`Harness.read_reply` (RFC 5321 section 4.2).

    ``lines`` are the texts after ``NNN-``/``NNN `` of each line; ``raw`` the wire bytes.
    """

    code: int
    lines: tuple[str, ...]
    raw: bytes

    @property
    def text(self) -> str:
        """All lines joined with newlines."""
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code of the last line, if it starts with one."""
        first = self.lines[-1].split(" ", 1)[0] if self.lines else ""
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return first
        return None


def harness_state(
    config: Any = None,
    *,
    hostname: str = "mx.test",
    timeouts: Timeouts | None = None,
    auth_failures: AuthFailureTracker | None = None,
) -> ServerState:
    """A ``ServerState`` for harness sessions: short timeouts and failure delays.

    Pass the same state to several :class:`Harness` objects to share what a server
    shares between connections (the per-address authentication-failure tracker).
    """
    return ServerState(
        config=config,
        auth_failures=auth_failures
        if auth_failures is not None
        else AuthFailureTracker(max_failures=5, window=900.0, max_delay=0.01),
        hostname=hostname,
        timeouts=timeouts
        if timeouts is not None
        else Timeouts(
            command=10, data_block=10, pop3_idle=10, send=10, tls_handshake=10, shutdown_grace=5
        ),
    )


@dataclass(slots=True)
class _Transcript:
    entries: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, who: str, data: bytes) -> None:
        if self.entries and self.entries[-1][0] == who:
            self.entries[-1] = (who, self.entries[-1][1] + data)
        else:
            self.entries.append((who, data))


class Harness:
    """Run one session in memory and talk to it as a scripted client.

    ``session`` is the session coroutine, ``service`` one of
    :data:`~nosend_runners.session.boundary.SERVICES`. ``config`` is the ``mail.cfg`` value the
    session reads from ``ctx.config``; ``state`` overrides the whole shared server
    state (see :func:`harness_state`). ``peer`` is who the session believes it talks
    to. ``server_ssl`` enables STARTTLS/STLS (and is required for ``smtps``/``pop3s``);
    ``client_ssl`` is the context :meth:`start_tls` and implicit TLS use on the client
    side (default: trust anything, as a test client of a self-signed server).
    ``clock`` and ``nonce`` replace the context's wall clock and random tokens, so a
    transcript can be made reproducible. ``log`` replaces the session log.

    Use as ``async with``: entering starts the session, leaving closes the client side
    and waits (bounded by ``close_timeout``) for the session to end.
    """

    def __init__(
        self,
        session: SessionFunc,
        service: str = "smtp",
        *,
        config: Any = None,
        state: ServerState | None = None,
        peer: PeerInfo = DEFAULT_PEER,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        clock: Callable[[], float] | None = None,
        nonce: Callable[[], str] | None = None,
        log: SessionLog | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self._session = session
        self.service = service
        self.state = state if state is not None else harness_state(config)
        if state is None and config is not None:
            self.state.config = config
        self._peer = peer
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._clock = clock
        self._nonce = nonce
        self._log = log
        self._close_timeout = close_timeout
        self._client: anyio.abc.ByteStream | None = None
        self._client_raw: MemoryByteStream | None = None
        self._server: AnyioStream | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._done = anyio.Event()
        self._buffer = b""
        self._eof = False
        self._transcript = _Transcript()
        #: The session's context, once started (read its log fields, session id...).
        self.ctx: SessionContext | None = None

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Harness:
        client, server_end = memory_stream_pair()
        self._client_raw = client
        self._client = client
        guard = SessionGuard(self.state.shutdown)
        timeouts = self.state.timeouts
        stream = AnyioStream(
            server_end,
            self._peer,
            guard,
            ssl_context=self._server_ssl,
            send_timeout=timeouts.send,
            tls_handshake_timeout=timeouts.tls_handshake,
        )
        self._server = stream
        extra: dict[str, Any] = {}
        if self._clock is not None:
            extra["clock"] = self._clock
        if self._nonce is not None:
            extra["nonce"] = self._nonce
        self.ctx = SessionContext(
            self.service,
            state=self.state,
            peer=lambda: stream.peer,
            guard=guard,
            log=self._log,
            **extra,
        )
        if self.state.blocking_limiter is None:
            self.state.blocking_limiter = anyio.CapacityLimiter(4)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run_session)
        if self.ctx.implicit_tls:
            try:
                await self.start_tls(announce=False)
            except BaseException as exc:
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def _run_session(self) -> None:
        assert self._server is not None and self.ctx is not None
        try:
            await run_connection(self._server, self.ctx, self._session)
        finally:
            self._done.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        timed_out = False
        try:
            if exc_type is None:
                await self.close()
                with anyio.move_on_after(self._close_timeout) as scope:
                    await self._done.wait()
                timed_out = scope.cancelled_caught
        finally:
            if exc_type is not None or timed_out:
                self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(exc_type, exc, tb)
        if timed_out:
            raise TimeoutError(
                f"the session did not end within {self._close_timeout} s of the client closing"
            )
        return None

    @property
    def session_done(self) -> bool:
        """Whether the session coroutine has returned."""
        return self._done.is_set()

    async def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Wait until the session ends and return everything it sent not yet read."""
        rest = await self.read_all(timeout)
        with anyio.fail_after(timeout):
            await self._done.wait()
        return rest

    async def close(self) -> None:
        """Close the client's sending side (the session sees EOF, ``b""``)."""
        if self._client is None:
            return
        try:
            if isinstance(self._client, TLSStream):
                # TLS streams cannot half-close: close the transport under it instead.
                assert self._client_raw is not None
                await self._client_raw.send_eof()
            else:
                await self._client.send_eof()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError, ssl.SSLError):
            pass

    def request_shutdown(self) -> None:
        """Begin a graceful server shutdown, as SIGTERM would."""
        self.state.shutdown.request()

    # -- client side ---------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send bytes as the client (exactly these bytes; add CRLFs yourself)."""
        assert self._client is not None
        self._transcript.add("C", data)
        await self._client.send(data)

    async def send_line(self, line: str | bytes) -> None:
        """Send one command line, CRLF appended."""
        raw = line.encode("utf-8") if isinstance(line, str) else line
        await self.send(raw + b"\r\n")

    async def _fill(self, timeout: float) -> bool:
        """Read more from the session into the buffer; False at EOF."""
        assert self._client is not None
        if self._eof:
            return False
        with anyio.fail_after(timeout):
            try:
                data = await self._client.receive(65536)
            except (
                anyio.EndOfStream,
                anyio.ClosedResourceError,
                anyio.BrokenResourceError,
                ssl.SSLError,
            ):
                self._eof = True
                return False
        self._transcript.add("S", data)
        self._buffer += data
        return True

    async def read_line(self, timeout: float = 10.0) -> bytes:
        """The next line the session sent, without CRLF; raises :class:`HarnessClosed`
        if the session closed first. ``TimeoutError`` after ``timeout`` seconds."""
        while b"\r\n" not in self._buffer:
            if not await self._fill(timeout):
                raise HarnessClosed(f"session closed; unread: {self._buffer!r}")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    async def read_reply(self, timeout: float = 10.0) -> SMTPReply:
        """Read one (possibly multi-line) SMTP reply (RFC 5321 section 4.2.1)."""
        lines: list[str] = []
        raw = b""
        while True:
            line = await self.read_line(timeout)
            raw += line + b"\r\n"
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError(f"not an SMTP reply line: {line!r}")
            lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return SMTPReply(int(line[:3]), tuple(lines), raw)

    async def read_replies(self, count: int, timeout: float = 10.0) -> list[SMTPReply]:
        """Read ``count`` SMTP replies (for pipelined commands)."""
        return [await self.read_reply(timeout) for _ in range(count)]

    async def read_multiline(self, timeout: float = 10.0) -> list[bytes]:
        """Read a POP3 multi-line body up to ``.CRLF`` (RFC 1939 section 3), after its
        status line has been read with :meth:`read_line`; dot-stuffing is undone."""
        out: list[bytes] = []
        while True:
            line = await self.read_line(timeout)
            if line == b".":
                return out
            out.append(line[1:] if line.startswith(b".") else line)

    async def read_all(self, timeout: float = 10.0) -> bytes:
        """Everything the session sends until it closes the connection."""
        while await self._fill(timeout):
            pass
        data, self._buffer = self._buffer, b""
        return data

    async def start_tls(self, *, announce: bool = True) -> None:
        """Run the client side of a TLS handshake (after the server said 220/+OK).

        ``announce`` is only for the implicit-TLS start; tests leave it alone.
        """
        assert self._client is not None
        context = self._client_ssl
        if context is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if announce:
            self._transcript.add("C", b"<TLS handshake>\r\n")
        self._client = await TLSStream.wrap(
            self._client,
            hostname="localhost",
            ssl_context=context,
            standard_compatible=False,
        )

    # -- transcript ----------------------------------------------------------------------

    @property
    def transcript(self) -> Sequence[tuple[str, bytes]]:
        """``[("C", bytes), ("S", bytes), ...]``: who said what, in order."""
        return tuple(self._transcript.entries)

    def transcript_text(self) -> str:
        """The transcript as ``C: line`` / ``S: line`` text, one wire line per line."""
        out: list[str] = []
        for who, data in self._transcript.entries:
            for line in data.split(b"\r\n"):
                if line:
                    out.append(f"{who}: {line.decode('utf-8', 'backslashreplace')}")
        return "\n".join(out)


async def run_script(
    session: SessionFunc,
    service: str,
    script: bytes | Sequence[bytes],
    *,
    timeout: float = 10.0,
    **options: Any,
) -> bytes:
    """Run ``session``, send ``script`` (all at once, as a pipelining client would; a
    sequence is sent piece by piece), close the client's side and return everything
    the session sent. ``options`` are :class:`Harness` keyword arguments."""
    pieces = [script] if isinstance(script, bytes) else list(script)
    async with Harness(session, service, **options) as h:
        for piece in pieces:
            await h.send(piece)
        await h.close()
        return await h.wait_closed(timeout)
