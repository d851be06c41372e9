"""``Stream`` over any anyio byte stream: TCP sockets, file descriptors, memory pairs.

Owns: turning anyio's exceptions into the seam's (``b""``, ``TimeoutError``,
``StreamClosed``, ``ShutdownRequested``), the send timeout, and the in-place TLS upgrade
with ``anyio.streams.tls.TLSStream`` (which runs OpenSSL through a MemoryBIO, so it works
over a socket, a pipe pair under socat, or an in-memory stream alike). Must not: buffer
received bytes (bytes pipelined after STARTTLS stay the engine's to discard), know any
protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from nosend_runners.serve import fastpath
from nosend_runners.session.boundary import PeerInfo, SessionGuard, ShutdownRequested, StreamClosed

__all__ = ["AnyioStream", "SocketByteStream", "peer_from_socket_stream"]

_SEND_PIECE = 65536

#: Receives that found data waiting in a row before one of them yields to the event
#: loop anyway, so a peer that keeps the socket full cannot starve other sessions.
_YIELD_EVERY = 16

# What a broken connection looks like from anyio, asyncio, trio and OpenSSL.
_BROKEN = fastpath.BROKEN


def _host_port(address: object) -> tuple[str, int | None]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    if isinstance(address, str) and address:
        return address, None
    return "unknown", None


def peer_from_socket_stream(stream: anyio.TypedAttributeProvider) -> PeerInfo:
    """Build a ``PeerInfo`` from an anyio socket stream's typed attributes."""
    if isinstance(stream, SocketByteStream):
        # Once per connection: skip building the attribute table twice.
        remote, local = stream._remote, stream._local
    else:
        remote = stream.extra(SocketAttribute.remote_address, None)
        local = stream.extra(SocketAttribute.local_address, None)
    address, port = _host_port(remote)
    local_address, local_port = _host_port(local) if local is not None else (None, None)
    # An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d; log and limit by a.b.c.d.
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    return PeerInfo(address, port, local_address=local_address, local_port=local_port)


class SocketByteStream(anyio.abc.ByteStream):
    """An anyio byte stream straight over a connected non-blocking socket.

    anyio's own socket stream on asyncio goes through an asyncio transport: every
    receive re-registers the socket with epoll and waits on an event, every send yields
    to the loop once. This one tries the system call first and waits for readiness
    (``anyio.wait_readable``/``wait_writable``: epoll on asyncio, trio's I/O manager)
    only when it would block; ``try_receive``/``try_send`` let ``AnyioStream`` arm its
    timeouts only then. TLS runs on top of it through ``TLSStream`` like on any other
    byte stream. Owns the socket and closes it.
    """

    def __init__(self, sock: socket.socket, remote_address: Any = None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._closed = False
        try:
            #: The asyncio loop when running on one: ``AnyioStream`` then waits for
            #: readability with a plain future and timer instead of a cancel scope.
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        # Asked once: a peer that already reset the connection makes getpeername fail.
        self._local = _sockname(sock.getsockname)
        self._remote = remote_address if remote_address is not None else _sockname(sock.getpeername)
        #: On asyncio with the fast paths on: waits for readability with the socket
        #: registered once for the whole connection (see ``fastpath.AsyncioReadiness``).
        self.readiness = (
            fastpath.AsyncioReadiness(self.loop, self._fd)
            if self.loop is not None and fastpath.ENABLED
            else None
        )

    def try_receive(self, max_bytes: int) -> bytes | None:
        """Bytes the socket holds now (``b""`` at EOF), or ``None`` when it would block."""
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            return self._sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    def try_send(self, data: bytes | memoryview) -> int:
        """Octets of ``data`` the kernel took now (0 when its buffer is full)."""
        if self._closed:
            raise anyio.ClosedResourceError
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    @property
    def fd(self) -> int:
        """The socket's file descriptor."""
        return self._fd

    async def wait_readable(self) -> None:
        """Wait until a receive would not block."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self.readiness is not None:
            # anyio registers the fd itself: ours must not be registered meanwhile.
            self.readiness.release()
        await anyio.wait_readable(self._fd)

    async def wait_writable(self) -> None:
        """Wait until a send would make progress."""
        if self._closed:
            raise anyio.ClosedResourceError
        await anyio.wait_writable(self._fd)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next bytes received; ``EndOfStream`` once the peer closed."""
        while (data := self.try_receive(max_bytes)) is None:
            await self.wait_readable()
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        """Send all of ``item``, waiting while the peer's window is full."""
        view = memoryview(item)
        while view:
            sent = self.try_send(view)
            if sent:
                view = view[sent:]
            else:
                await self.wait_writable()

    async def send_eof(self) -> None:
        """Shut down the sending side (the peer sees end of file)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket now (closing a socket never blocks)."""
        if not self._closed:
            self._closed = True
            if self.readiness is not None:
                self.readiness.release()
            if self.loop is None:
                # trio keeps its own registration of the fd: tell it first. On asyncio
                # only this stream's own task ever waits on the fd, and not now.
                anyio.notify_closing(self._fd)
            self._sock.close()

    async def aclose(self) -> None:
        """Close the socket, waking any task still waiting on it."""
        if not self._closed:
            self._closed = True
            if self.readiness is not None:
                self.readiness.release()
            anyio.notify_closing(self._fd)
            self._sock.close()
        await anyio.lowlevel.checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The socket attributes ``peer_from_socket_stream`` and ``TLSStream`` ask for."""
        sock = self._sock
        return {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: lambda: self._local,
            SocketAttribute.raw_socket: lambda: sock,
            SocketAttribute.remote_address: lambda: self._remote,
        }


def _sockname(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except OSError:
        return None


class AnyioStream:
    """The seam's ``Stream`` over an ``anyio.abc.ByteStream`` (see ``session.boundary``).

    Over a :class:`SocketByteStream` (a plain TCP connection) receive and send try the
    system call first and only set up a deadline when they have to wait: most calls
    then cost one system call and no trip through the event loop.
    """

    def __init__(
        self,
        inner: anyio.abc.ByteStream,
        peer: PeerInfo,
        guard: SessionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
        send_timeout: float = 300.0,
        tls_handshake_timeout: float = 60.0,
    ) -> None:
        self._inner: anyio.abc.ByteStream = inner
        self._peer = peer
        self._guard = guard
        self._ssl_context = ssl_context
        self._send_timeout = send_timeout
        self._handshake_timeout = tls_handshake_timeout
        self._closed = False
        self._raw = inner if isinstance(inner, SocketByteStream) else None
        self._ready_streak = 0

    @property
    def peer(self) -> PeerInfo:
        """The peer and the current protection of the connection."""
        return self._peer

    @property
    def can_start_tls(self) -> bool:
        """Whether a certificate is configured and the stream is not yet TLS."""
        return self._ssl_context is not None and not self._peer.tls and not self._closed

    @property
    def closed(self) -> bool:
        """Whether the stream was closed (by ``aclose`` or a failure)."""
        return self._closed

    async def receive(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Return received bytes, ``b""`` at EOF; ``TimeoutError``/``ShutdownRequested``."""
        if self._closed:
            return b""
        guard = self._guard
        interruptible = guard.interruptible
        if interruptible and guard.shutdown.requested:
            raise ShutdownRequested
        raw = self._raw
        if raw is not None:
            self._ready_streak += 1
            if self._ready_streak >= _YIELD_EVERY:
                self._ready_streak = 0
                await anyio.lowlevel.checkpoint()
            try:
                data = raw.try_receive(max_bytes)
            except _BROKEN:
                return b""
            if data is not None:
                return data
            self._ready_streak = 0
        if raw is not None and raw.readiness is not None:
            # The asyncio fast path (see fastpath); what follows is the reference path.
            return await fastpath.receive_when_readable(
                raw, raw.readiness, guard.shutdown, max_bytes, timeout, interruptible
            )
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        data = b""
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                if interruptible:
                    with guard.shutdown.idle(scope):
                        data = await self._wait_receive(raw, max_bytes)
                else:
                    data = await self._wait_receive(raw, max_bytes)
            except _BROKEN:
                return b""
        if scope.cancelled_caught:
            if interruptible and guard.shutdown.requested:
                raise ShutdownRequested
            raise TimeoutError(f"nothing received for {timeout} seconds")
        return data

    async def _wait_receive(self, raw: SocketByteStream | None, max_bytes: int) -> bytes:
        if raw is None:
            return await self._inner.receive(max_bytes)
        while True:
            await raw.wait_readable()
            data = raw.try_receive(max_bytes)
            if data is not None:
                return data

    async def send(self, data: bytes) -> None:
        """Send all of ``data``; ``StreamClosed`` if the peer is gone or stops reading.

        The send timeout applies to each wait for the peer to read (each 64 KB piece
        over TLS), so a slow reader that keeps reading is never cut off, and one that
        reads nothing is dropped in bounded time.
        """
        if self._closed:
            raise StreamClosed("stream is closed")
        if not data:
            return
        raw = self._raw
        if raw is None:
            await self._send_pieces(data)
            return
        view = memoryview(data)
        try:
            while view:
                sent = raw.try_send(view)
                if sent:
                    view = view[sent:]
                    continue
                with anyio.move_on_after(self._send_timeout) as scope:
                    await raw.wait_writable()
                if scope.cancelled_caught:
                    await self.aclose()
                    raise StreamClosed(f"peer read nothing for {self._send_timeout} seconds")
        except _BROKEN as exc:
            await self.aclose()
            raise StreamClosed(f"send failed: {exc.__class__.__name__}") from exc

    async def _send_pieces(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), _SEND_PIECE):
            piece = view[start : start + _SEND_PIECE]
            with anyio.move_on_after(self._send_timeout) as scope:
                try:
                    await self._inner.send(bytes(piece) if len(view) > _SEND_PIECE else data)
                except _BROKEN as exc:
                    await self.aclose()
                    raise StreamClosed(f"send failed: {exc.__class__.__name__}") from exc
            if scope.cancelled_caught:
                await self.aclose()
                raise StreamClosed(f"peer read nothing for {self._send_timeout} seconds")

    async def start_tls(self) -> None:
        """Run the server side of a TLS handshake on this connection, in place."""
        if self._ssl_context is None or self._peer.tls:
            raise RuntimeError("start_tls called while can_start_tls is false")
        tls: TLSStream | None = None
        with anyio.move_on_after(self._handshake_timeout):
            try:
                # standard_compatible=False: mail peers commonly close without
                # close_notify, and the protocols' own QUIT ends the exchange.
                tls = await TLSStream.wrap(
                    self._inner,
                    server_side=True,
                    ssl_context=self._ssl_context,
                    standard_compatible=False,
                )
            except _BROKEN as exc:
                await self.aclose()
                raise StreamClosed(f"TLS handshake failed: {exc}") from exc
        if tls is None:
            await self.aclose()
            raise StreamClosed("TLS handshake timed out")
        self._inner = tls
        self._raw = None
        cipher = tls.extra(TLSAttribute.cipher, None)
        self._peer = dataclasses.replace(
            self._peer,
            tls=True,
            tls_version=tls.extra(TLSAttribute.tls_version, None),
            cipher=cipher[0] if cipher else None,
        )

    async def aclose(self) -> None:
        """Close the connection; never raises, never waits long."""
        if self._closed:
            return
        self._closed = True
        if self._raw is not None:
            self._raw.close()
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._inner.aclose()
            except Exception:  # noqa: BLE001 - closing a broken stream may fail; nothing to do
                pass
