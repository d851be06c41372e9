"""``nosend inetd SERVICE``: one session on the connection inherited on stdin/stdout.

Owns: finding the connection a super-server handed us and running one session on it:
openbsd-inetd, xinetd and ucspi ``tcpserver`` pass a TCP socket as fds 0 and 1;
systemd ``Accept=yes`` passes it as fd 0 (``StandardInput=socket``) or as fd 3 with
``LISTEN_FDS=1``; socat ``EXEC:`` passes a socketpair, or two pipes with ``,pipes``.
STARTTLS/STLS work on every one of them (TLS over a MemoryBIO, independent of the fd
type). The peer address comes from the socket when it is a TCP socket, else from the
environment the super-server sets, else ``"unknown"``. Must not: log to stderr when
stderr is the connection (openbsd-inetd and xinetd put the socket on fd 2 too); the
CLI chooses the log destination with ``stderr_is_connection``.

Examples (``--log-file`` or syslog: never stderr, which is the socket)::

    # /etc/inetd.conf (openbsd-inetd)
    smtp  stream tcp nowait.20 nosend /usr/local/bin/nosend nosend inetd smtp
    pop3  stream tcp nowait.20 nosend /usr/local/bin/nosend nosend inetd pop3

    # /etc/xinetd.d/nosend-smtp
    service smtp
    {
        socket_type = stream
        wait        = no
        user        = nosend
        server      = /usr/local/bin/nosend
        server_args = inetd smtp
        instances   = 20
        per_source  = 5
    }

    # systemd, Accept=yes: nosend-smtp.socket has ListenStream=25 and Accept=yes;
    # nosend-smtp@.service has ExecStart=/usr/local/bin/nosend inetd smtp and
    # StandardInput=socket (or leave stdin alone: the socket then arrives as fd 3).

    # socat, for a quick test:
    socat TCP-LISTEN:2525,reuseaddr,fork EXEC:"nosend inetd smtp"

The process runs as the user the super-server names (the fifth column of inetd.conf,
xinetd's ``user``, systemd's ``User=``). Started as root with ``user =`` in
``mail.cfg``, the CLI gives up root through ``run_inetd``'s ``on_ready``, after the TLS
files are read and before the connection is.

Connection limits under inetd are the super-server's job (xinetd ``instances`` and
``per_source``, openbsd-inetd ``nowait.N``). The per-client lockout after repeated
authentication failures holds across connections: each process reads and updates the
table in ``data_dir/state/auth-failures.json`` (see ``shared_limits``).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Callable, Mapping, MutableMapping

import anyio
import anyio.abc

from nosend_runners.serve.activation import listen_fds
from nosend_runners.serve.connection import run_connection
from nosend_runners.serve.datadir import secure_data_dir, set_private_umask
from nosend_runners.serve.fdstream import FdByteStream
from nosend_runners.serve.limits import AuthFailureTracker, LimitSettings
from nosend_runners.serve.settings import ServerSettings
from nosend_runners.serve.shared_limits import FileAuthFailureTracker, auth_failures_path
from nosend_runners.serve.streams import AnyioStream, peer_from_socket_stream
from nosend_runners.serve.tls import server_context
from nosend_runners.session.boundary import (
    PeerInfo,
    ServerState,
    SessionContext,
    SessionFunc,
    SessionGuard,
    StreamClosed,
)
from nosend_runners.session.replies import refusal
from nosend_store.config import Config

__all__ = ["run_inetd", "refuse_inetd", "stderr_is_connection", "peer_from_environment"]

# Set by the super-servers, most specific first: systemd Accept=yes, ucspi-tcp, socat,
# xinetd.
_ENV_PEERS = (
    ("REMOTE_ADDR", "REMOTE_PORT"),
    ("TCPREMOTEIP", "TCPREMOTEPORT"),
    ("SOCAT_PEERADDR", "SOCAT_PEERPORT"),
    ("REMOTE_HOST", None),
)


def peer_from_environment(environ: Mapping[str, str]) -> PeerInfo:
    """The peer as the super-server's environment names it, or ``"unknown"``."""
    for address_key, port_key in _ENV_PEERS:
        address = environ.get(address_key, "").strip()
        if address:
            port_text = environ.get(port_key, "") if port_key else ""
            port = int(port_text) if port_text.isdigit() else None
            return PeerInfo(address, port)
    return PeerInfo("unknown")


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def stderr_is_connection(fd: int = 0) -> bool:
    """Whether fd 2 is the same open file as the connection on ``fd`` (log elsewhere)."""
    try:
        a, b = os.fstat(fd), os.fstat(2)
    except OSError:
        return False
    return stat.S_ISSOCK(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


async def _open_connection(
    environ: MutableMapping[str, str], read_fd: int, write_fd: int
) -> tuple[anyio.abc.ByteStream, PeerInfo]:
    activated = [s for s in listen_fds(environ) if not s.listening]
    if activated:
        # systemd Accept=yes with the connection as fd 3 (sd_listen_fds(3)).
        sock = activated[0].sock
    elif _is_socket(read_fd):
        sock = socket.socket(fileno=os.dup(read_fd))
    else:
        return FdByteStream(read_fd, write_fd), peer_from_environment(environ)
    stream = await anyio.abc.SocketStream.from_socket(sock)
    peer = peer_from_socket_stream(stream)
    if peer.address == "unknown":  # a UNIX socketpair (socat EXEC:)
        peer = peer_from_environment(environ)
    return stream, peer


async def run_inetd(
    service: str,
    session: SessionFunc,
    settings: ServerSettings,
    *,
    config: object = None,
    environ: MutableMapping[str, str] | None = None,
    read_fd: int = 0,
    write_fd: int = 1,
    handle_signals: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve one ``service`` session on the inherited connection, then return.

    With ``handle_signals`` (the command line), SIGTERM/SIGINT shut the session down
    gracefully, as under ``nosend serve``, and the process runs with umask 077.
    ``on_ready`` is called once the certificate and key are read, before a byte of the
    connection is: the CLI gives up root there (``user =`` in ``mail.cfg``).
    """
    env = os.environ if environ is None else environ
    if handle_signals:
        set_private_umask()  # the process is ours (the command line): files stay private
    if isinstance(config, Config):
        await anyio.to_thread.run_sync(secure_data_dir, config.server.data_dir)
    ssl_context = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    if on_ready is not None:
        on_ready()
    inner, peer = await _open_connection(env, read_fd, write_fd)
    limits: LimitSettings = settings.limits
    auth_failures: AuthFailureTracker
    if isinstance(config, Config):
        # A process per connection: the lockout must outlive this one (shared_limits).
        auth_failures = FileAuthFailureTracker(
            auth_failures_path(config.server.data_dir),
            limits.auth_max_failures,
            limits.auth_window,
            limits.auth_max_delay,
        )
    else:
        auth_failures = AuthFailureTracker(
            limits.auth_max_failures, limits.auth_window, limits.auth_max_delay
        )
    state = ServerState(
        config=config,
        auth_failures=auth_failures,
        blocking_limiter=anyio.CapacityLimiter(2),
        hostname=settings.hostname,
        timeouts=settings.timeouts,
    )
    guard = SessionGuard(state.shutdown)
    stream = AnyioStream(
        inner,
        peer,
        guard,
        ssl_context=ssl_context,
        send_timeout=settings.timeouts.send,
        tls_handshake_timeout=settings.timeouts.tls_handshake,
    )
    ctx = SessionContext(service, state=state, peer=lambda: stream.peer, guard=guard)
    try:
        async with anyio.create_task_group() as tg:
            if handle_signals:
                await tg.start(_watch_signals, state, tg.cancel_scope)
            await run_connection(stream, ctx, session)
            tg.cancel_scope.cancel()
    finally:
        _release_stdio(read_fd, write_fd)


async def _watch_signals(
    state: ServerState,
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM/SIGINT (inetd or systemd stopping): finish a message in flight, then 421;
    a second signal stops at once."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            if state.shutdown.requested:
                scope.cancel()
                return
            state.shutdown.request()


def _release_stdio(read_fd: int, write_fd: int) -> None:
    """Drop our other references to a socket on stdin/stdout so the peer sees the close
    now, not at process exit; /dev/null keeps the fd numbers valid."""
    for fd in {read_fd, write_fd}:
        if _is_socket(fd):
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
            os.close(null)


async def refuse_inetd(service: str, read_fd: int = 0, write_fd: int = 1) -> None:
    """Answer the inherited connection with a temporary failure (no usable config).

    Plain text only: with no configuration there is no certificate for implicit TLS.
    """
    inner, peer = await _open_connection(os.environ, read_fd, write_fd)
    stream = AnyioStream(inner, peer, SessionGuard(ServerState().shutdown), send_timeout=10)
    try:
        await stream.send(refusal(service, "unavailable"))
    except StreamClosed:
        pass
    finally:
        await stream.aclose()
