"""Upstream connections: plain, implicit TLS, STARTTLS-style upgrade; bytes and round trips."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from nosend_runners.client.connection import LinkMeter, UpstreamError, open_upstream
from nosend_runners.client.tls import certificate_fingerprint
from tests.runners.conftest import CertFiles, free_port

pytestmark = pytest.mark.anyio


def _server(cert: CertFiles | None, *, implicit: bool) -> socket.socket:
    """A line server: greets, then answers each line; 'TLS' upgrades the connection."""
    context = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert, cert.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def session(conn: socket.socket) -> None:
        try:
            talk(conn)
        except (OSError, ssl.SSLError):
            pass  # the client hung up or refused our certificate: part of some tests

    def talk(conn: socket.socket) -> None:
        if implicit and context is not None:
            conn = context.wrap_socket(conn, server_side=True)
        conn.sendall(b"hello\n")
        buffer = b""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if line == b"TLS" and context is not None:
                    conn.sendall(b"go\n")
                    conn = context.wrap_socket(conn, server_side=True)
                else:
                    conn.sendall(b"got " + line + b"\n")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener


async def _line(conn: object) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await conn.receive()  # type: ignore[attr-defined]
        if not chunk:
            break
        data += chunk
    return data


async def test_plain_connection_counts_bytes_and_round_trips() -> None:
    with _server(None, implicit=False) as listener:
        conn = await open_upstream("127.0.0.1", listener.getsockname()[1], tls="none")
        assert await _line(conn) == b"hello\n"
        await conn.send(b"a\nb\n")  # two commands in one write: one round trip
        assert await _line(conn) + await _line(conn) in (b"got a\ngot b\n",)
        await conn.send(b"c\n")
        assert await _line(conn) == b"got c\n"
        await conn.aclose()
    assert conn.meter.bytes_sent == 6
    assert conn.meter.bytes_received == len(b"hello\ngot a\ngot b\ngot c\n")
    assert conn.meter.round_trips == 2


async def test_implicit_tls_with_ca_file_and_meter_counts_the_handshake(
    tls_cert: CertFiles,
) -> None:
    meter = LinkMeter()
    with _server(tls_cert, implicit=True) as listener:
        conn = await open_upstream("localhost", listener.getsockname()[1], tls="implicit",
                                   ca_file=tls_cert.cert, meter=meter)
        assert conn.tls
        assert await _line(conn) == b"hello\n"
        await conn.aclose()
    # The TLS handshake crossed the wire too, and the meter shows it.
    assert meter.bytes_received > 500 and meter.round_trips >= 1


async def test_starttls_upgrade_with_a_pinned_fingerprint(tls_cert: CertFiles) -> None:
    pin = certificate_fingerprint(ssl.PEM_cert_to_DER_cert(Path(tls_cert.cert).read_text()))
    with _server(tls_cert, implicit=False) as listener:
        conn = await open_upstream("127.0.0.1", listener.getsockname()[1], tls="starttls",
                                   fingerprint=pin)
        assert await _line(conn) == b"hello\n"
        await conn.send(b"TLS\n")
        assert await _line(conn) == b"go\n"
        await conn.start_tls()
        await conn.send(b"secret\n")
        assert await _line(conn) == b"got secret\n"
        await conn.aclose()


async def test_untrusted_certificate_and_wrong_pin_are_refused(tls_cert: CertFiles) -> None:
    with _server(tls_cert, implicit=True) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(UpstreamError, match="certificate not trusted"):
            await open_upstream("localhost", port, tls="implicit")
        with pytest.raises(UpstreamError, match="not the pinned one"):
            await open_upstream("localhost", port, tls="implicit", fingerprint="ab" * 32)


async def test_refused_connection_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(UpstreamError, match=f"127.0.0.1:{port}: cannot connect"):
        await open_upstream("127.0.0.1", port, tls="none")


async def test_silence_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never speaks
    with listener:
        conn = await open_upstream("127.0.0.1", listener.getsockname()[1], tls="none",
                                   timeout=0.3)
        with pytest.raises(UpstreamError, match="no answer for 0.3 s"):
            await conn.receive()
        await conn.aclose()
