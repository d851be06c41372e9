"""Python's poplib, a real client, against the engine over a 127.0.0.1 socket.

The driver below is the smallest possible runner: one thread, one accepted connection,
``recv`` → ``Session.feed`` → ``sendall``, and a TLS wrap after STLS. It proves the wire
format is what an independent client parses, including the octet counts it computes.
"""

from __future__ import annotations

import hashlib
import poplib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_proto.pop3_events import POP3ServerConfig
from tests.conftest import require_tool
from tests.proto.test_pop3_support import (
    MESSAGES,
    PASSWORD,
    USER,
    Session,
    config,
    normalise,
)

TIMEOUT = 10


class Server:
    """Serve one POP3 connection from a thread on a free 127.0.0.1 port."""

    def __init__(self, cfg: POP3ServerConfig, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.session = Session.start(cfg, chunk_size=4096)
        self.tls = tls
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(TIMEOUT)
            session = self.session
            conn.sendall(session.greeting)
            while session.final is None:
                data = conn.recv(65536)
                tls_before = session.tls_started
                out = session.feed(data)
                if out:
                    conn.sendall(out)
                if session.tls_started != tls_before:
                    assert self.tls is not None
                    conn = self.tls.wrap_socket(conn, server_side=True)
            conn.close()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(config(utf8=True))
    yield srv
    srv.listener.close()


def client(srv: Server) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", srv.port, timeout=TIMEOUT)


def test_poplib_full_session(server: Server) -> None:
    pop = client(server)
    assert pop.getwelcome().startswith(b"+OK POP3 server ready <")
    caps = pop.capa()
    assert "TOP" in caps and "UIDL" in caps and "USER" in caps and "PIPELINING" in caps
    assert caps["SASL"] == ["PLAIN", "LOGIN", "CRAM-MD5"]
    pop.user(USER)
    assert pop.pass_(PASSWORD).startswith(b"+OK maildrop has 3 messages")
    sizes = [len(normalise(m)) for m in MESSAGES]
    assert pop.stat() == (3, sum(sizes))
    _, listing, _ = pop.list()
    assert listing == [f"{i + 1} {size}".encode() for i, size in enumerate(sizes)]
    assert pop.list(2).split()[2] == str(sizes[1]).encode()
    _, uids, _ = pop.uidl()
    assert uids == [b"1 uid-1", b"2 uid-2", b"3 uid-3"]
    for number, content in enumerate(MESSAGES, start=1):
        response, lines, octets = pop.retr(number)
        # poplib undoes the stuffing and counts CRLF line ends: exactly LIST's size.
        assert response == f"+OK {sizes[number - 1]} octets".encode()
        assert octets == sizes[number - 1]
        assert b"\r\n".join(lines) + b"\r\n" == normalise(content)
    _, top_lines, _ = pop.top(1, 1)
    assert top_lines == [b"From: a@example", b"Subject: one", b"", b"hello"]
    assert pop.dele(1).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match="already deleted"):
        pop.retr(1)
    assert pop.stat() == (2, sum(sizes[1:]))
    pop.rset()
    pop.dele(3)
    assert pop.noop() == b"+OK NOOP"
    assert pop.quit().startswith(b"+OK mail.example POP3 server signing off (2 messages")
    server.join()
    assert server.session.applied is not None
    assert [m.uid for m in server.session.applied] == ["uid-3"]


def test_poplib_apop_and_errors(server: Server) -> None:
    pop = client(server)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.apop(USER, "wrong")
    pop.apop(USER, PASSWORD)
    with pytest.raises(poplib.error_proto, match="no such message"):
        pop.retr(9)
    with pytest.raises(poplib.error_proto, match="not valid in the TRANSACTION state"):
        pop.user(USER)
    pop.close()  # dropped without QUIT: nothing is deleted
    server.join()
    assert server.session.applied is None


def test_poplib_utf8(server: Server) -> None:
    pop = client(server)
    assert pop.utf8() == b"+OK UTF8 enabled"
    pop.user(USER)
    pop.pass_(PASSWORD)
    pop.quit()
    server.join()
    assert server.session.conn.utf8_enabled


@pytest.fixture
def tls_context(tmp_path: Path) -> ssl.SSLContext:
    openssl = require_tool("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_poplib_stls_then_plaintext_login(tls_context: ssl.SSLContext) -> None:
    srv = Server(config(tls_available=True, auth_requires_tls=True), tls=tls_context)
    pop = client(srv)
    assert "USER" not in pop.capa()
    with pytest.raises(poplib.error_proto, match="disallowed without TLS"):
        pop.user(USER)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    pop.stls(client_context)
    caps = pop.capa()
    assert "USER" in caps and "STLS" not in caps
    pop.user(USER)
    pop.pass_(PASSWORD)
    _, lines, _ = pop.retr(3)
    assert lines == [b"Subject: three", b"", b".", b"..", b"last"]
    pop.quit()
    srv.join()
    assert srv.session.conn.tls_active


def test_apop_digest_poplib_sends_is_what_the_engine_checks(server: Server) -> None:
    pop = client(server)
    timestamp = pop.getwelcome().split()[-1]
    expected = hashlib.md5(timestamp + PASSWORD.encode()).hexdigest()
    pop.apop(USER, PASSWORD)
    event = server.session.events[0]
    assert event.credentials.digest == expected  # type: ignore[attr-defined]
    pop.quit()
    server.join()
