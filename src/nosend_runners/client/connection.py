"""One connection to an upstream server, as the client engines need it, with a meter.

Owns: opening a TCP connection (plain, implicit TLS, or plain and later upgraded for
STARTTLS/STLS), the account's TLS verification (:mod:`nosend_runners.client.tls`), read
and write timeouts, and the :class:`LinkMeter` that counts what a bill counts: bytes each
way on the wire (TLS records included, since that is what the link carries) and round
trips (each time we wait for the server after we last wrote). Must not: know SMTP or
POP3, decide what to send, retry, or log a secret (it never sees the engines' bytes as
text).

Bytes are counted below TLS: the connection reads and writes the raw socket, and TLS
runs through ``anyio.streams.tls.TLSStream`` on top of a counting wrapper, so an
accounting ledger sees the handshake and record overhead that the provider bills.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream

from nosend_runners.client.tls import check_fingerprint, client_context

__all__ = ["LinkMeter", "UpstreamConnection", "UpstreamError", "open_upstream"]

TLSMode = Literal["implicit", "starttls", "none"]

_RECEIVE_MAX = 65536


class UpstreamError(Exception):
    """The connection failed, timed out or was closed; the message names host and port."""


@dataclass
class LinkMeter:
    """What crossed the wire on one or more connections: bytes and round trips."""

    bytes_sent: int = 0
    bytes_received: int = 0
    round_trips: int = 0
    _wrote_since_read: bool = False

    def add(self, other: LinkMeter) -> None:
        """Add ``other``'s counts to this meter (a cycle's total over its connections)."""
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.round_trips += other.round_trips


class _CountingStream(anyio.abc.ByteStream):
    """The raw socket stream, with every byte and every turnaround counted."""

    def __init__(self, inner: anyio.abc.ByteStream, meter: LinkMeter) -> None:
        self.inner = inner
        self.meter = meter

    async def receive(self, max_bytes: int = _RECEIVE_MAX) -> bytes:
        data = await self.inner.receive(max_bytes)
        if self.meter._wrote_since_read:
            self.meter.round_trips += 1
            self.meter._wrote_since_read = False
        self.meter.bytes_received += len(data)
        return data

    async def send(self, item: bytes) -> None:
        await self.inner.send(item)
        self.meter.bytes_sent += len(item)
        self.meter._wrote_since_read = True

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def extra_attributes(self):  # type: ignore[no-untyped-def]
        return self.inner.extra_attributes


class UpstreamConnection:
    """A byte pipe to one server for one client engine; see :func:`open_upstream`."""

    def __init__(
        self,
        raw: _CountingStream,
        stream: anyio.abc.ByteStream,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        fingerprint: str | None,
        timeout: float,
    ) -> None:
        self._raw = raw
        self._stream = stream
        self.host = host
        self.port = port
        self._context = context
        self._fingerprint = fingerprint
        self.timeout = timeout
        self.meter = raw.meter
        self.tls = isinstance(stream, TLSStream)

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, data: bytes) -> None:
        """Write ``data`` whole, or raise :class:`UpstreamError`."""
        if not data:
            return
        try:
            with anyio.fail_after(self.timeout):
                await self._stream.send(data)
        except TimeoutError:
            raise UpstreamError(f"{self._where()}: no progress sending for "
                                f"{self.timeout:g} s") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError,
                ssl.SSLError) as exc:
            raise UpstreamError(f"{self._where()}: connection lost while sending "
                                f"({type(exc).__name__})") from None

    async def receive(self) -> bytes:
        """The next bytes from the server; ``b""`` once it closed the connection."""
        try:
            with anyio.fail_after(self.timeout):
                return await self._stream.receive(_RECEIVE_MAX)
        except anyio.EndOfStream:
            return b""
        except TimeoutError:
            raise UpstreamError(f"{self._where()}: no answer for {self.timeout:g} s") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError,
                ssl.SSLError) as exc:
            raise UpstreamError(f"{self._where()}: connection lost while reading "
                                f"({type(exc).__name__})") from None

    async def start_tls(self) -> None:
        """Upgrade in place after the server's go-ahead to STARTTLS or STLS."""
        if self._context is None or self.tls:
            raise UpstreamError(f"{self._where()}: TLS is not configured for this account")
        self._stream = await _handshake(self._raw, self._context, self.host, self._fingerprint,
                                        self.timeout, self._where())
        self.tls = True

    async def aclose(self) -> None:
        """Close the connection; never raises."""
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_after(2):
                    await self._stream.aclose()
            except Exception:  # noqa: BLE001 -- closing a broken stream may fail any way
                pass


async def _handshake(
    raw: anyio.abc.ByteStream,
    context: ssl.SSLContext,
    host: str,
    fingerprint: str | None,
    timeout: float,
    where: str,
) -> TLSStream:
    try:
        with anyio.fail_after(timeout):
            stream = await TLSStream.wrap(
                raw, server_side=False, hostname=host, ssl_context=context,
                standard_compatible=False,
            )
    except TimeoutError:
        raise UpstreamError(f"{where}: TLS handshake took over {timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamError(f"{where}: certificate not trusted: {exc.verify_message}") from None
    except (anyio.BrokenResourceError, anyio.EndOfStream, OSError, ssl.SSLError) as exc:
        raise UpstreamError(f"{where}: TLS handshake failed ({exc})") from None
    if fingerprint is not None:
        ssl_object = stream.extra(TLSAttribute.ssl_object)
        try:
            check_fingerprint(ssl_object, fingerprint)
        except Exception as exc:
            await stream.aclose()
            raise UpstreamError(f"{where}: {exc}") from None
    return stream


async def open_upstream(
    host: str,
    port: int,
    *,
    tls: TLSMode,
    ca_file: str | Path | None = None,
    fingerprint: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 60.0,
    meter: LinkMeter | None = None,
    verify: bool = True,
) -> UpstreamConnection:
    """Connect to ``host:port``; with ``tls="implicit"`` finish the TLS handshake first
    (RFC 8314). With ``"starttls"`` the caller calls :meth:`UpstreamConnection.start_tls`
    when the protocol says so; with ``"none"`` TLS is never used. ``verify=False``: the
    certificate is not checked (``tls_verify = no``; a fingerprint still pins)."""
    where = f"{host}:{port}"
    try:
        with anyio.fail_after(connect_timeout):
            sock = await anyio.connect_tcp(host, port)
    except TimeoutError:
        raise UpstreamError(f"{where}: no connection within {connect_timeout:g} s") from None
    except OSError as exc:
        raise UpstreamError(f"{where}: cannot connect: {exc.strerror or exc}") from None
    raw = _CountingStream(sock, meter if meter is not None else LinkMeter())
    context = None if tls == "none" else client_context(
        ca_file=ca_file, fingerprint=fingerprint, verify=verify)
    stream: anyio.abc.ByteStream = raw
    if tls == "implicit":
        assert context is not None
        try:
            stream = await _handshake(raw, context, host, fingerprint, timeout, where)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sock.aclose()
            raise
    return UpstreamConnection(raw, stream, host=host, port=port, context=context,
                              fingerprint=fingerprint, timeout=timeout)
