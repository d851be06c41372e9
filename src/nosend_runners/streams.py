"""``Stream`` over any anyio byte stream: TCP sockets, file descriptors, memory pairs.

Owns: turning anyio's exceptions into the seam's (``b""``, ``TimeoutError``,
``StreamClosed``, ``ShutdownRequested``), the send timeout, and the in-place TLS upgrade
with ``anyio.streams.tls.TLSStream`` (which runs OpenSSL through a MemoryBIO, so it works
over a socket, a pipe pair under socat, or an in-memory stream alike). Must not: buffer
received bytes (bytes pipelined after STARTTLS stay the engine's to discard), know any
protocol.
"""

from __future__ import annotations

import dataclasses
import math
import ssl

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from nosend_runners.transport import PeerInfo, SessionGuard, ShutdownRequested, StreamClosed

__all__ = ["AnyioStream", "peer_from_socket_stream"]

_SEND_PIECE = 65536

# What a broken connection looks like from anyio, asyncio, trio and OpenSSL.
_BROKEN = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


def _host_port(address: object) -> tuple[str, int | None]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    if isinstance(address, str) and address:
        return address, None
    return "unknown", None


def peer_from_socket_stream(stream: anyio.TypedAttributeProvider) -> PeerInfo:
    """Build a ``PeerInfo`` from an anyio socket stream's typed attributes."""
    remote = stream.extra(SocketAttribute.remote_address, None)
    local = stream.extra(SocketAttribute.local_address, None)
    address, port = _host_port(remote)
    local_address, local_port = _host_port(local) if local is not None else (None, None)
    # An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d; log and limit by a.b.c.d.
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    return PeerInfo(address, port, local_address=local_address, local_port=local_port)


class AnyioStream:
    """The seam's ``Stream`` over an ``anyio.abc.ByteStream`` (see ``transport``)."""

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
        shutdown = self._guard.shutdown
        interruptible = self._guard.interruptible
        if interruptible and shutdown.requested:
            raise ShutdownRequested
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        data = b""
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                if interruptible:
                    with shutdown.idle(scope):
                        data = await self._inner.receive(max_bytes)
                else:
                    data = await self._inner.receive(max_bytes)
            except _BROKEN:
                return b""
        if scope.cancelled_caught:
            if interruptible and shutdown.requested:
                raise ShutdownRequested
            raise TimeoutError(f"nothing received for {timeout} seconds")
        return data

    async def send(self, data: bytes) -> None:
        """Send all of ``data``; ``StreamClosed`` if the peer is gone or stops reading.

        The send timeout applies to each 64 KB piece, so a slow reader that keeps
        reading is never cut off, and one that reads nothing is dropped in bounded time.
        """
        if self._closed:
            raise StreamClosed("stream is closed")
        if not data:
            return
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
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._inner.aclose()
            except Exception:  # noqa: BLE001 - closing a broken stream may fail; nothing to do
                pass
