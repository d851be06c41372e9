"""Interop in-process: Python's smtplib talks to the engine over a real TCP socket.

A small thread drives the engine (tests/proto/smtp_driver.serve_socket); the real runners
are tested elsewhere.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from nosend_proto.smtp_events import AuthAttempt, RcptTo, Reply, SMTPEvent
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig
from tests.conftest import require_tool
from tests.proto.smtp_driver import HOST, Harness, default_app, serve_socket


class Server:
    """One listening socket on 127.0.0.1 serving one connection in a thread."""

    def __init__(self, harness: Harness, tls: ssl.SSLContext | None = None) -> None:
        self.harness = harness
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(tls,), daemon=True)
        self.thread.start()

    def _run(self, tls: ssl.SSLContext | None) -> None:
        try:
            self.listener.settimeout(10)
            sock, _ = self.listener.accept()
            sock.settimeout(10)
            serve_socket(sock, self.harness, tls=tls)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.listener.close()

    def stop(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, RcptTo) and event.forward_path.startswith("nobody@"):
        return Reply(550, "No such user here", "5.1.1")
    if isinstance(event, AuthAttempt):
        ok = event.credentials.matches_secret("tanstaaf")
        return Reply(235, "OK") if ok else Reply(535, "Bad credentials")
    return default_app(conn, event)


def message(body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.net"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "interop"
    msg.set_content(body)
    return msg


def test_smtplib_sends_messages_with_dot_lines() -> None:
    server = Server(Harness(SMTPServerConfig(hostname=HOST), app=app))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        code, _ = client.ehlo("client.example.net")
        assert code == 250
        for feature in ("pipelining", "size", "8bitmime", "smtputf8", "chunking", "dsn"):
            assert client.has_extn(feature)
        assert client.esmtp_features["size"] == "36700160"
        body = ".leading dot\n..two dots\n.\nlast line\n"
        refused = client.send_message(message(body), rcpt_options=["NOTIFY=FAILURE"])
        assert refused == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@example.net", ["nobody@example.org"], b"x\r\n")
        assert client.verify("bob")[0] == 252
        assert client.noop()[0] == 250
    server.stop()
    stored = server.harness.messages[0]
    assert b"\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n" in stored
    assert b"\r\n\r\n.leading dot" in stored  # headers, blank line, unstuffed body


def test_smtplib_smtputf8_and_size_refusal() -> None:
    harness = Harness(SMTPServerConfig(hostname=HOST, max_message_size=2000), app=app)
    server = Server(harness)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.example.net")
        client.sendmail(
            "jösé@exämple.net", ["bob@example.org"], b"Subject: utf8\r\n\r\nhi\r\n",
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )  # fmt: skip
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("alice@example.net", ["bob@example.org"], b"x" * 5000)
        assert refused.value.smtp_code == 552
    server.stop()
    mail = [e for e in harness.events if type(e).__name__ == "MailFrom"]
    assert mail[0].reverse_path == "jösé@exämple.net"  # type: ignore[union-attr]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_auth(mechanism: str) -> None:
    config = SMTPServerConfig(hostname=HOST, auth_mechanisms=(mechanism,), auth_requires_tls=False)
    harness = Harness(config, app=app)
    server = Server(harness)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.example.net")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("tim", "wrong")
        assert client.login("tim", "tanstaaf")[0] == 235
    server.stop()
    assert harness.conn.auth_identity == "tim"


@pytest.fixture
def tls_context(tmp_path: Path) -> Iterator[ssl.SSLContext]:
    openssl = require_tool("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield context


def test_smtplib_starttls_then_auth(tls_context: ssl.SSLContext) -> None:
    config = SMTPServerConfig(hostname=HOST, tls_available=True, auth_mechanisms=("PLAIN",))
    harness = Harness(config, app=app)
    server = Server(harness, tls=tls_context)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.example.net")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.starttls(context=client_context)
        client.ehlo("client.example.net")
        assert not client.has_extn("starttls") and client.has_extn("auth")
        client.login("tim", "tanstaaf")
        client.send_message(message("over TLS\n"))
    server.stop()
    assert harness.conn.tls_active and harness.conn.auth_identity == "tim"
    assert len(harness.messages) == 1


@pytest.mark.interop
def test_swaks_pipelines_a_transaction(tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    harness = Harness(SMTPServerConfig(hostname=HOST), app=app)
    server = Server(harness)
    body = tmp_path / "body.eml"
    body.write_bytes(b"Subject: swaks\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n")
    result = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{server.port}", "--pipeline",
         "--from", "alice@example.net", "--to", "bob@example.org,nobody@example.org",
         "--ehlo", "client.example.net", "--data", f"@{body}", "--timeout", "10"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<** 550 5.1.1 No such user here" in result.stdout
    assert harness.messages == [b"Subject: swaks\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n\r\n"]
    # RFC 2920: MAIL, both RCPTs and DATA went as one group, answered together.
    group = " -> MAIL FROM:<alice@example.net>\n -> RCPT TO:<bob@example.org>\n"
    group += " -> RCPT TO:<nobody@example.org>\n -> DATA\n<-  250 2.1.0 OK\n"
    assert group in result.stdout
