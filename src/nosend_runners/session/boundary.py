"""The seam between server sessions and the runners that carry their bytes.

Owns: the ``Stream`` protocol a session reads and writes, ``PeerInfo``, the per-session
``SessionContext`` (service, clock, nonces, log, timeouts, shared server state, blocking
work, shutdown) and the exceptions that cross the seam. Must not: know any protocol or
any socket; the anyio server, inetd and the in-memory harness each supply a ``Stream``.

A session is ``async def run(stream: Stream, ctx: SessionContext) -> None``. It owns its
engine, its replies and its log lines; the runner owns sockets, TLS, limits and shutdown.

Contract, in the order a session meets it:

- ``await stream.receive(max_bytes, timeout=...)`` returns the bytes that arrived, ``b""``
  when the peer closed or the connection broke, raises ``TimeoutError`` after ``timeout``
  seconds with nothing received, and raises ``ShutdownRequested`` when the server is
  stopping and the session is idle (not inside ``ctx.busy()``): the session then answers
  421 / ``-ERR [SYS/TEMP]`` and returns.
- ``await stream.send(data)`` sends everything or raises ``StreamClosed`` (peer gone, or
  it read nothing for ``ctx.timeouts.send`` seconds: one stuck reader never blocks
  other sessions).
- ``await stream.start_tls()`` upgrades the connection in place (server side; RFC 3207,
  RFC 2595). The stream holds no read-ahead buffer, so any bytes the peer pipelined after
  STARTTLS/STLS are in the *engine's* buffer and the engine must discard them
  (RFC 3207 section 4.2, the STARTTLS command-injection attack). Raises ``StreamClosed``
  when the handshake fails; the session then just returns.
- Work that touches the disk goes through ``await ctx.run_blocking(fn, *args)``; a thread
  already running finishes even when the session is cancelled, so an fsync in flight is
  never torn off half way.
- ``with ctx.busy():`` around receiving a message body and committing it tells the
  runner not to interrupt this stretch for a graceful shutdown (DESIGN invariant 1).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread

from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.log import SessionLog

if TYPE_CHECKING:
    # Only a type here: the fast-path module itself imports this one.
    from nosend_runners.serve.fastpath import ThreadPool

__all__ = [
    "SERVICES",
    "PeerInfo",
    "Stream",
    "StreamClosed",
    "ShutdownRequested",
    "Timeouts",
    "ShutdownSignal",
    "SessionGuard",
    "ServerState",
    "SessionContext",
    "SessionFunc",
]

#: Service names a session factory is asked for. ``smtps``/``pop3s`` are implicit TLS
#: (RFC 8314 section 3.3): the stream is already encrypted when the session starts.
SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s")

T = TypeVar("T")


class StreamClosed(Exception):
    """The connection can no longer carry data (peer gone, send timeout, TLS failure)."""


class ShutdownRequested(Exception):
    """The server is stopping; raised by ``Stream.receive`` while the session is idle."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is on the other end, and how the connection is protected right now.

    ``address`` is an IP address, or a best guess such as ``"unknown"`` for a pipe;
    ``port`` is ``None`` when unknown. ``tls_version``/``cipher`` are set once ``tls``.
    ``local_address``/``local_port`` name our end (for Received: headers).
    """

    address: str
    port: int | None = None
    tls: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    local_address: str | None = None
    local_port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return host if self.port is None else f"{host}:{self.port}"


@runtime_checkable
class Stream(Protocol):
    """A bidirectional byte stream carrying one session (see the module docstring)."""

    @property
    def peer(self) -> PeerInfo:
        """The peer and the current protection of the connection."""
        ...

    @property
    def can_start_tls(self) -> bool:
        """Whether ``start_tls`` can succeed: a certificate is configured, not yet TLS."""
        ...

    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Return received bytes (``b""`` at EOF); see the module docstring for errors."""
        ...

    async def send(self, data: bytes) -> None:
        """Send all of ``data`` or raise ``StreamClosed``."""
        ...

    async def start_tls(self) -> None:
        """Upgrade to TLS in place as the server; raise ``StreamClosed`` on failure."""
        ...

    async def aclose(self) -> None:
        """Close the connection (idempotent, never raises)."""
        ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds a server session waits before giving up (configuration, RFC defaults).

    ``command``: awaiting the next SMTP command; RFC 5321 section 4.5.3.2.7 says at least
    5 minutes. ``data_block``: awaiting the next piece of a message body; the client's own
    timeout is 3 minutes (section 4.5.3.2.5) and the server's is the same 5 minutes
    (4.5.3.2.7). ``data_termination``: how long the client waits for our reply to the
    final dot (10 minutes, 4.5.3.2.6); a commit must finish well inside it.
    ``pop3_idle``: the POP3 autologout timer, at least 10 minutes (RFC 1939 section 3).
    ``send``: bound on one ``Stream.send`` call, so a peer that reads nothing is
    dropped; send a large message in chunks (64 KB) so a slow but live reader is not.
    ``tls_handshake``: bound on a TLS handshake. ``shutdown_grace``: on SIGTERM, how
    long a busy session may run before it is cancelled.
    """

    command: float = 300.0
    data_block: float = 300.0
    data_termination: float = 600.0
    pop3_idle: float = 600.0
    send: float = 300.0
    tls_handshake: float = 60.0
    shutdown_grace: float = 60.0


class Interruptible(Protocol):
    """What ``ShutdownSignal.idle`` registers: an ``anyio.CancelScope`` or anything else
    whose ``cancel()`` wakes the waiting receive."""

    def cancel(self) -> Any:
        """Wake the receive this stands for."""
        ...


class ShutdownSignal:
    """Server-wide graceful-shutdown flag that interrupts idle receives.

    Each ``Stream`` implementation enters ``idle()`` around a receive it may abandon; on
    ``request()`` those receives are cancelled and the stream raises ``ShutdownRequested``.
    """

    __slots__ = ("_requested", "_idle", "_event")

    def __init__(self) -> None:
        self._requested = False
        self._idle: set[Interruptible] = set()
        self._event: anyio.Event | None = None

    @property
    def requested(self) -> bool:
        """Whether a graceful shutdown has begun."""
        return self._requested

    def request(self) -> None:
        """Begin a graceful shutdown: wake every idle receive (idempotent)."""
        self._requested = True
        for scope in list(self._idle):
            scope.cancel()
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once ``request()`` was called."""
        if self._requested:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    @contextmanager
    def idle(self, scope: Interruptible) -> Iterator[None]:
        """Register ``scope`` as cancellable by a shutdown while the block runs."""
        self.enter_idle(scope)
        try:
            yield
        finally:
            self._idle.discard(scope)

    def enter_idle(self, scope: Interruptible) -> None:
        """``idle()`` without the context manager, for the per-command receive path:
        register ``scope`` until ``leave_idle(scope)`` (call it in a ``finally``)."""
        if self._requested:
            scope.cancel()
        self._idle.add(scope)

    def leave_idle(self, scope: Interruptible) -> None:
        """End what ``enter_idle(scope)`` began."""
        self._idle.discard(scope)


class SessionGuard:
    """Per-session: whether the session is inside ``busy()``, and the shutdown signal."""

    __slots__ = ("shutdown", "_busy")

    def __init__(self, shutdown: ShutdownSignal) -> None:
        self.shutdown = shutdown
        self._busy = 0

    @property
    def interruptible(self) -> bool:
        """Whether a shutdown may interrupt a receive now."""
        return self._busy == 0

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a stretch (message body and commit) that a shutdown must let finish."""
        self.enter_busy()
        try:
            yield
        finally:
            self.leave_busy()

    def enter_busy(self) -> None:
        """``busy()`` without the context manager, for a stretch that spans several
        events (a session's message body); pair it with ``leave_busy()``."""
        self._busy += 1

    def leave_busy(self) -> None:
        """End what ``enter_busy()`` began."""
        self._busy -= 1


@dataclass(slots=True)
class ServerState:
    """State shared by every session of one server process.

    ``config`` is the current ``mail.cfg`` (a reload replaces it; a session keeps the one
    it started with in ``SessionContext.config``). ``auth_failures`` tracks guessing per
    client (an IPv4 address or IPv6 /64) and user name. ``blocking_limiter`` bounds
    worker threads for disk work.
    """

    config: Any = None
    auth_failures: AuthFailureTracker = field(default_factory=AuthFailureTracker)
    shutdown: ShutdownSignal = field(default_factory=ShutdownSignal)
    blocking_limiter: anyio.CapacityLimiter | None = None
    hostname: str = "localhost"
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Worker threads for blocking work (the asyncio fast path, ``serve.fastpath``); without
    #: one, ``run_blocking`` uses ``anyio.to_thread`` under ``blocking_limiter``.
    thread_pool: ThreadPool | None = None

    def limiter(self) -> anyio.CapacityLimiter:
        """The limiter for blocking work, created on first use inside the event loop."""
        if self.blocking_limiter is None:
            self.blocking_limiter = anyio.CapacityLimiter(8)
        return self.blocking_limiter


def _nonce() -> str:
    return secrets.token_hex(12)


class SessionContext:
    """Everything a session needs besides its stream; one per connection.

    Attributes: ``service`` (one of ``SERVICES``), ``session_id`` (short random id on
    every log line), ``config`` (the ``mail.cfg`` snapshot for this session),
    ``hostname`` (our name for greetings and Received: headers), ``timeouts``,
    ``state`` (the shared ``ServerState``), ``log`` (a ``SessionLog``), ``clock``
    (wall-clock seconds, for Received:/Date), ``monotonic`` (for measuring), ``nonce``
    (a fresh unpredictable token for APOP/CRAM-MD5 challenges and message ids).
    """

    __slots__ = (
        "service",
        "session_id",
        "config",
        "hostname",
        "timeouts",
        "state",
        "log",
        "clock",
        "monotonic",
        "nonce",
        "_peer",
        "_guard",
    )

    def __init__(
        self,
        service: str,
        *,
        state: ServerState,
        peer: Callable[[], PeerInfo],
        guard: SessionGuard | None = None,
        log: SessionLog | None = None,
        session_id: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        nonce: Callable[[], str] = _nonce,
    ) -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        self.service = service
        self.session_id = session_id if session_id is not None else secrets.token_hex(4)
        self.state = state
        self.config = state.config
        self.hostname = state.hostname
        self.timeouts = state.timeouts
        self._peer = peer
        self._guard = guard if guard is not None else SessionGuard(state.shutdown)
        self.log = (
            log
            if log is not None
            else SessionLog(service=service, session=self.session_id, peer=str(peer()))
        )
        self.clock = clock
        self.monotonic = monotonic
        self.nonce = nonce

    @property
    def peer(self) -> PeerInfo:
        """The peer as the stream sees it now (``tls`` turns true after STARTTLS)."""
        return self._peer()

    @property
    def implicit_tls(self) -> bool:
        """Whether this service runs TLS from the first byte (RFC 8314)."""
        return self.service in ("smtps", "pop3s")

    @property
    def auth_failures(self) -> AuthFailureTracker:
        """The server-wide authentication-failure tracker (per client and user name)."""
        return self.state.auth_failures

    @property
    def shutting_down(self) -> bool:
        """Whether a graceful shutdown has begun; finish the current step and say 421."""
        return self.state.shutdown.requested

    @property
    def guard(self) -> SessionGuard:
        """The per-session guard the session's stream consults."""
        return self._guard

    def busy(self) -> AbstractContextManager[None]:
        """Context manager: a shutdown lets the enclosed body + commit finish."""
        return self._guard.busy()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` (disk work) in a bounded worker thread.

        The thread is never abandoned: cancellation waits for it to return, so an
        fsync or rename in flight always completes (DESIGN invariant 1).
        """
        pool = self.state.thread_pool
        if pool is not None:
            return await pool.run(fn, *args)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.state.limiter())

    async def run_cpu_bound(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` that is slow on purpose (password hashing) in a worker
        thread apart from the disk pool, so that logins never hold up deliveries.

        Like ``run_blocking``, the thread is never abandoned.
        """
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.state.limiter())


#: The type of a session coroutine function.
SessionFunc = Callable[[Stream, SessionContext], Awaitable[None]]
