"""The ``nosend serve`` core: listeners, TLS, limits, signals and graceful shutdown.

Owns: binding (or inheriting, via systemd socket activation) the listening sockets for
SMTP, submission, SMTPS, POP3 and POP3S; accepting connections on asyncio or trio
through anyio; implicit TLS (RFC 8314) before a session starts; refusing connections
over the connection limits (overall, per service and per client, with reserves for each
service and for trusted networks: ``serve.limits``); running one session task per connection;
SIGHUP reload of ``mail.cfg`` (a bad file is logged with file:line and the old one
kept); SIGTERM/SIGINT graceful shutdown; the periodic queue and mailbox housekeeping
(:mod:`nosend_runners.mail.housekeeping`) alongside the sessions. Must not: speak SMTP or
POP3 beyond the one-line refusals in ``session.replies.refusal``; sessions own every
other byte.

The code here is the reference path, plain anyio on either backend. On asyncio the
optimisations of :mod:`nosend_runners.serve.fastpath` (accept callback, reused session
tasks, readiness waits, our own worker threads) replace some of its steps, behind the
one switch ``fastpath.ENABLED``.

Graceful shutdown, in order: idle sessions are woken (their ``receive`` raises
``ShutdownRequested``; they answer 421 / ``-ERR [SYS/TEMP]`` and end), new connections
are no longer accepted, sessions inside ``ctx.busy()`` (a message body and its commit)
run on for up to ``timeouts.shutdown_grace`` seconds, then whatever is left is
cancelled. A disk commit running in a worker thread always completes first.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import SocketAttribute

from nosend_runners.mail.housekeeping import DEFAULT_INTERVAL, run_housekeeping
from nosend_runners.serve import fastpath, memory
from nosend_runners.serve.activation import InheritedSocket
from nosend_runners.serve.connection import run_connection
from nosend_runners.serve.datadir import secure_data_dir, set_private_umask
from nosend_runners.serve.limits import AuthFailureTracker, ConnectionLimiter
from nosend_runners.serve.settings import ServerSettings
from nosend_runners.serve.streams import AnyioStream, SocketByteStream, peer_from_socket_stream
from nosend_runners.serve.tls import TLSConfigError, TLSUnreadable, server_context
from nosend_runners.session.boundary import (
    ServerState,
    SessionContext,
    SessionFunc,
    SessionGuard,
    StreamClosed,
)
from nosend_runners.session.replies import refusal

__all__ = ["MailServer", "ServerSetupError", "BoundAddress", "Reloader"]

_log = logging.getLogger("nosend.server")

# accept() errors that pass: out of descriptors (EMFILE, ENFILE), of memory (ENOBUFS,
# ENOMEM), or a connection that died before it was accepted.
_ACCEPT_RETRY = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPERM}
)

#: Called on SIGHUP (in a worker thread): returns the new ``(config, settings)`` or
#: raises an exception whose ``str()`` says what is wrong (``ConfigError``: file:line).
Reloader = Callable[[], tuple[Any, ServerSettings]]

BoundAddress = tuple[str, str, int]  # (service, host, port)


class ServerSetupError(Exception):
    """The server cannot start: a port is taken, TLS is missing for SMTPS/POP3S, ..."""


def _tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None:
        return None
    return server_context(settings.tls_cert, settings.tls_key)


class MailServer:
    """Serve sessions on every configured listener until shut down.

    ``session_factory(service)`` returns the session coroutine for a service; it is
    asked once per service at start-up, so a missing session module fails the start
    rather than the first connection. ``inherited`` are listening sockets from systemd
    (``activation.listen_fds``); when given, they replace ``settings.listen``.
    ``handle_signals`` says the process is the server's: it then handles SIGTERM,
    SIGINT and SIGHUP and runs with umask 077 (``serve.datadir``).
    With a ``config``, queue expiry, delivery reports and ``tmp/`` cleanup run at start
    and every ``housekeeping_interval`` seconds (None: never). ``on_listening`` is called
    once every listener is open, before any connection is accepted and before the
    housekeeping reads any mail: ``nosend serve`` gives up root there (``user =``); an
    exception from it closes the listeners and ends ``serve``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        session_factory: Callable[[str], SessionFunc],
        *,
        config: Any = None,
        reloader: Reloader | None = None,
        inherited: Sequence[InheritedSocket] = (),
        handle_signals: bool = False,
        housekeeping_interval: float | None = DEFAULT_INTERVAL,
        on_listening: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_listening = on_listening
        self._housekeeping_interval = housekeeping_interval
        self._inherited = list(inherited)
        services = (
            {s.service for s in self._inherited if s.service}
            if self._inherited
            else {entry.service for entry in settings.listen}
        )
        try:
            self._ssl = _tls_context(settings)
        except TLSConfigError as exc:
            raise ServerSetupError(str(exc)) from None
        if self._ssl is None and services & {"smtps", "pop3s"}:
            raise ServerSetupError(
                "smtps/pop3s listeners need tls_cert and tls_key in mail.cfg (RFC 8314)"
            )
        self._sessions = {service: session_factory(service) for service in sorted(services)}
        limits = settings.limits
        self.state = ServerState(
            config=config,
            auth_failures=AuthFailureTracker(
                limits.auth_max_failures, limits.auth_window, limits.auth_max_delay
            ),
            hostname=settings.hostname,
            timeouts=settings.timeouts,
        )
        self.connections = ConnectionLimiter(
            limits.max_connections,
            limits.max_per_address,
            services=self._sessions,
            service_reserve=limits.service_reserve,
            trusted_reserve=limits.trusted_reserve,
            trusted=self._trusted,
        )
        self._reloader = reloader
        self._handle_signals = handle_signals
        self._live = 0
        self._drained: anyio.Event | None = None
        #: The asyncio accept fast path, while serving with it (see ``fastpath``).
        self.acceptor: fastpath.AsyncioAcceptor | None = None
        self._force: anyio.CancelScope | None = None
        #: Where the server listens, once started: (service, host, port).
        self.addresses: list[BoundAddress] = []

    def _trusted(self, address: str) -> bool:
        """Whether ``address`` is on the current configuration's trusted networks."""
        config = self.state.config
        is_trusted = getattr(config, "is_trusted", None)
        return bool(is_trusted(address)) if is_trusted is not None else False

    # -- life cycle ----------------------------------------------------------------------

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[MailServer] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve until ``shutdown()`` (or a signal), then shut down gracefully."""
        limits = self.settings.limits
        if self._handle_signals:
            # The process is the server's (the command line): what it creates is private,
            # and the password checks' large buffers go back to the system when freed.
            set_private_umask()
            memory.return_large_buffers()
        data_dir = getattr(getattr(self.state.config, "server", None), "data_dir", None)
        if data_dir is not None:
            await anyio.to_thread.run_sync(secure_data_dir, data_dir)
        self.state.blocking_limiter = anyio.CapacityLimiter(limits.blocking_threads)
        if fastpath.active():
            self.state.thread_pool = fastpath.ThreadPool(limits.disk_threads)
            self.acceptor = fastpath.AsyncioAcceptor(
                self._handle, SocketByteStream, self.state.shutdown
            )
        self._drained = anyio.Event()
        if self._handle_signals and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            # A SIGHUP (say, systemctl reload) between the listeners opening and the
            # signal receiver starting would end the process by default; the
            # configuration was just read, so there is nothing to reload yet.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        listeners = await self._open_listeners()
        try:
            if self._on_listening is not None:
                self._on_listening()
            with anyio.CancelScope() as force:
                self._force = force
                async with anyio.create_task_group() as sessions:
                    if self._handle_signals:
                        # In the sessions' group: a second signal during the grace
                        # period must still reach us.
                        await sessions.start(self._signal_loop)
                    if self._housekeeping_interval is not None:
                        # In the sessions' group: it stops by itself when the shutdown
                        # begins; a pass in flight finishes (its thread is never torn off).
                        sessions.start_soon(
                            run_housekeeping, self.state, self._housekeeping_interval
                        )
                    async with anyio.create_task_group() as accepting:
                        for service, listener in listeners:
                            accepting.start_soon(self._accept_loop, listener, service, sessions)
                        _log.info(
                            "listening %s",
                            " ".join(f"{s}={h}:{p}" for s, h, p in self.addresses),
                        )
                        task_status.started(self)
                        await self.state.shutdown.wait()
                        accepting.cancel_scope.cancel()
                    if self.acceptor is not None:
                        self.acceptor.end_idle_tasks()
                    await self._close_listeners(listeners)
                    grace = self.settings.timeouts.shutdown_grace
                    _log.info("shutting down: %d session(s) open, grace %ss", self._live, grace)
                    if self._live:
                        with anyio.move_on_after(grace):
                            await self._drained.wait()
                    if self._live:
                        _log.warning("cancelling %d session(s) after the grace period", self._live)
                    sessions.cancel_scope.cancel()
        finally:
            await self._close_listeners(listeners)
            if self.state.thread_pool is not None:
                self.state.thread_pool.close()
            _log.info("stopped")

    def shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGTERM and SIGINT do)."""
        if not self.state.shutdown.requested:
            _log.info("graceful shutdown requested")
        self.state.shutdown.request()

    def abort(self) -> None:
        """Stop at once: cancel every session (a second SIGTERM/SIGINT)."""
        self.state.shutdown.request()
        if self._force is not None:
            self._force.cancel()

    @property
    def live_sessions(self) -> int:
        """Number of sessions running now."""
        return self._live

    # -- listeners -----------------------------------------------------------------------

    async def _open_listeners(self) -> list[tuple[str, anyio.abc.SocketListener]]:
        opened: list[tuple[str, anyio.abc.SocketListener]] = []
        try:
            if self._inherited:
                for inherited in self._inherited:
                    if inherited.service is None or not inherited.listening:
                        _log.warning(
                            "ignoring inherited socket %r: %s",
                            inherited.name,
                            "not listening" if inherited.service else "unknown service",
                        )
                        inherited.sock.close()
                        continue
                    listener = await anyio.abc.SocketListener.from_socket(inherited.sock)
                    opened.append((inherited.service, listener))
            else:
                for entry in self.settings.listen:
                    host = None if entry.host in ("", "*") else entry.host
                    try:
                        multi = await anyio.create_tcp_listener(
                            local_host=host, local_port=entry.port
                        )
                    except OSError as exc:
                        raise ServerSetupError(
                            f"cannot listen on {entry.host}:{entry.port} for {entry.service}: "
                            f"{exc.strerror or exc}"
                        ) from None
                    for one in multi.listeners:
                        assert isinstance(one, anyio.abc.SocketListener)
                        opened.append((entry.service, one))
        except BaseException:
            await self._close_listeners(opened)
            raise
        for service, listener in opened:
            local = listener.extra(SocketAttribute.local_address)
            if isinstance(local, tuple):
                self.addresses.append((service, str(local[0]), int(local[1])))
        return opened

    @staticmethod
    async def _close_listeners(listeners: list[tuple[str, anyio.abc.SocketListener]]) -> None:
        with anyio.CancelScope(shield=True):
            for _, listener in listeners:
                try:
                    await listener.aclose()
                except (OSError, anyio.BrokenResourceError):
                    pass

    async def _accept_loop(
        self,
        listener: anyio.abc.SocketListener,
        service: str,
        sessions: anyio.abc.TaskGroup,
    ) -> None:
        raw = listener.extra(SocketAttribute.raw_socket, None)
        if self.acceptor is not None and isinstance(raw, socket.socket):
            await self.acceptor.accept_loop(raw, service, sessions)
        else:
            await self._accept_streams(listener, service, sessions)

    async def _accept_streams(
        self,
        listener: anyio.abc.SocketListener,
        service: str,
        sessions: anyio.abc.TaskGroup,
    ) -> None:
        """The reference accept loop: a task per connection (trio, and asyncio with the
        fast paths off)."""
        failing = False
        while True:
            try:
                conn = await listener.accept()
            except anyio.ClosedResourceError:
                return
            except (anyio.BrokenResourceError, OSError) as exc:
                # anyio on trio wraps accept()'s OSError in BrokenResourceError: a
                # listener out of descriptors or memory must not stop accepting for good.
                cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc
                if not isinstance(cause, OSError) or cause.errno not in _ACCEPT_RETRY:
                    if isinstance(exc, anyio.BrokenResourceError):
                        return
                # EMFILE/ENFILE/ECONNABORTED: keep serving those already connected, and
                # log once per spell, not ten lines a second onto a disk that may be small.
                if not failing:
                    _log.error("accept on %s failed, retrying: %s", service, cause)
                    failing = True
                await anyio.sleep(0.1)
                continue
            if failing:
                _log.warning("accepting on %s again", service)
                failing = False
            sessions.start_soon(self._handle, conn, service)

    # -- one connection ------------------------------------------------------------------

    async def _handle(self, conn: anyio.abc.ByteStream, service: str) -> None:
        timeouts = self.state.timeouts
        peer = peer_from_socket_stream(conn)
        guard = SessionGuard(self.state.shutdown)
        stream = AnyioStream(
            conn,
            peer,
            guard,
            ssl_context=self._ssl,
            send_timeout=timeouts.send,
            tls_handshake_timeout=timeouts.tls_handshake,
        )
        ctx = SessionContext(service, state=self.state, peer=lambda: stream.peer, guard=guard)
        if not self.connections.try_acquire(service, peer.address):
            ctx.log.warning(
                "refused",
                reason="too many connections",
                total=self.connections.total,
                in_service=self.connections.in_service(service),
                from_client=self.connections.count(service, peer.address),
            )
            await self._refuse(stream, ctx, "busy")
            return
        self._live += 1
        try:
            await run_connection(stream, ctx, self._sessions[service])
        finally:
            self.connections.release(service, peer.address)
            self._live -= 1
            if self._live == 0 and self.state.shutdown.requested and self._drained is not None:
                self._drained.set()

    async def _refuse(self, stream: AnyioStream, ctx: SessionContext, reason: str) -> None:
        try:
            if ctx.implicit_tls:
                await stream.start_tls()
            await stream.send(refusal(ctx.service, reason))
        except StreamClosed:
            pass
        finally:
            await stream.aclose()

    # -- signals and reload --------------------------------------------------------------

    async def _signal_loop(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                elif self.state.shutdown.requested:
                    _log.warning("second %s: stopping now", signal.Signals(signum).name)
                    self.abort()
                else:
                    _log.info("%s received", signal.Signals(signum).name)
                    self.shutdown()

    async def reload(self) -> bool:
        """Re-read the configuration (SIGHUP); keep the old one if the new one is bad.

        Applies the new ``mail.cfg`` to sessions that start from now on, with its
        hostname, timeouts, limits and certificate. Listener changes need a restart.
        Returns whether the new configuration was taken.
        """
        if self._reloader is None:
            _log.warning("reload requested but this server has no configuration file")
            return False
        try:
            config, settings = await anyio.to_thread.run_sync(self._reloader)
            ssl_context = self._reload_tls(settings)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running config
            _log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        if settings.listen != self.settings.listen and not self._inherited:
            _log.warning("listener changes in the new configuration take effect on restart")
        self.settings = settings
        self._ssl = ssl_context
        self.state.config = config
        self.state.hostname = settings.hostname
        self.state.timeouts = settings.timeouts
        self.connections.max_total = settings.limits.max_connections
        self.connections.max_per_address = settings.limits.max_per_address
        self.connections.service_reserve = settings.limits.service_reserve
        self.connections.trusted_reserve = settings.limits.trusted_reserve
        _log.info("configuration reloaded")
        return True

    def _reload_tls(self, settings: ServerSettings) -> ssl.SSLContext | None:
        """The TLS context for a reloaded configuration.

        A server that gave up root (``user =``) may no longer read a key only root can
        read. When the files are those it loaded at start, it keeps that context and
        says so in one line; new files it cannot read fail the reload as before.
        """
        try:
            return _tls_context(settings)
        except TLSUnreadable as exc:
            same = (settings.tls_cert, settings.tls_key) == (
                self.settings.tls_cert,
                self.settings.tls_key,
            )
            if self._ssl is None or not same:
                raise
            _log.warning(
                "tls: %s; keeping the certificate and key read at start (restart to load "
                "new ones)",
                exc,
            )
            return self._ssl
