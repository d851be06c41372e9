"""Client TLS: verification by default, a CA file, or a pinned certificate fingerprint."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from nosend_runners.client.tls import (
    TLSVerifyError,
    certificate_fingerprint,
    check_fingerprint,
    client_context,
    normalise_fingerprint,
)
from tests.runners.conftest import CertFiles


def _tls_server(cert: CertFiles) -> tuple[socket.socket, threading.Thread]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(b"hello\r\n")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _connect(port: int, context: ssl.SSLContext, name: str = "localhost") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname=name)


def _der(cert: CertFiles) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(cert.cert).read_text())


def test_default_context_verifies_and_refuses_an_unknown_certificate(tls_cert: CertFiles) -> None:
    listener, _ = _tls_server(tls_cert)
    with listener, pytest.raises(ssl.SSLCertVerificationError):
        _connect(listener.getsockname()[1], client_context())


def test_ca_file_is_trusted_and_the_host_name_still_checked(tls_cert: CertFiles) -> None:
    listener, _ = _tls_server(tls_cert)
    port = listener.getsockname()[1]
    with listener:
        with _connect(port, client_context(ca_file=tls_cert.cert)) as conn:
            assert conn.recv(100) == b"hello\r\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            _connect(port, client_context(ca_file=tls_cert.cert), name="mail.example.org")


def test_pinned_fingerprint_accepts_that_certificate_only(tls_cert: CertFiles) -> None:
    listener, _ = _tls_server(tls_cert)
    port = listener.getsockname()[1]
    pin = certificate_fingerprint(_der(tls_cert))
    with listener:
        with _connect(port, client_context(fingerprint=pin), name="any.name") as conn:
            check_fingerprint(conn, pin)
            assert conn.recv(100) == b"hello\r\n"
        wrong = "00" * 32
        with _connect(port, client_context(fingerprint=wrong)) as conn:
            with pytest.raises(TLSVerifyError, match="not the pinned one"):
                check_fingerprint(conn, wrong)


def test_fingerprint_forms() -> None:
    digest = "AB:" * 31 + "CD"
    assert normalise_fingerprint(digest) == "ab" * 31 + "cd"
    with pytest.raises(ValueError, match="64 hex digits"):
        normalise_fingerprint("abc")
    with pytest.raises(ValueError, match="not both"):
        client_context(ca_file="x.pem", fingerprint="ab" * 32)
    with pytest.raises(FileNotFoundError, match="missing.pem"):
        client_context(ca_file="/nonexistent/missing.pem")


def test_tls_1_2_is_the_floor() -> None:
    assert client_context().minimum_version is ssl.TLSVersion.TLSv1_2
    assert client_context(fingerprint="ab" * 32).minimum_version is ssl.TLSVersion.TLSv1_2
