"""SMTP server engine: STARTTLS (RFC 3207), AUTH (RFC 4954) and pipelining flush points."""
# ruff: noqa: E501 -- transcript tables read best with one exchange per line

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from nosend_proto import LocalProtocolError
from nosend_proto.smtp_events import (
    NEED_DATA,
    AuthAttempt,
    AuthChallenge,
    Hello,
    MailFrom,
    ProtocolViolation,
    Reply,
    SMTPEvent,
    StartTLS,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, Harness, run_transcript

TLS = SMTPServerConfig(hostname=HOST, tls_available=True, auth_mechanisms=("PLAIN", "LOGIN"))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_TIM = b64("\0tim\0secret")


def test_starttls_discards_pipelined_injection_and_restarts_the_session() -> None:
    h = Harness(TLS)
    run_transcript(
        h,
        """
        S: 220 mx.example.org ESMTP
        C: EHLO client.example.net
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        C: STARTTLS
        C: MAIL FROM:<injected@example.net>
        C: RCPT TO:<victim@example.org>
        S: 220 2.0.0 Ready to start TLS
        """,
    )
    # CVE-2011-0411: what followed STARTTLS in cleartext is gone, never read as commands.
    assert h.conn.state is SMTPState.TLS_PENDING
    assert h.conn.discarded_after_starttls == len(
        b"MAIL FROM:<injected@example.net>\r\nRCPT TO:<victim@example.org>\r\n"
    )
    assert h.conn.should_flush
    with pytest.raises(LocalProtocolError):
        h.conn.next_event()
    with pytest.raises(LocalProtocolError):
        h.conn.receive_data(b"\x16\x03\x01")  # the runner must not feed handshake bytes
    h.conn.start_tls_done()
    assert h.conn.tls_active and h.conn.helo_name is None
    assert not any(isinstance(e, MailFrom) for e in h.events)
    # RFC 3207 section 4.2: EHLO again; STARTTLS gone, AUTH now offered.
    out = h.feed(b"MAIL FROM:<a@example.net>\r\nEHLO client.example.net\r\n")
    assert out.startswith(b"503 5.5.1 Send HELO or EHLO first\r\n250-mx.example.org\r\n")
    assert b"STARTTLS" not in out
    assert out.endswith(b"250-DSN\r\n250 AUTH PLAIN LOGIN\r\n")
    assert h.feed(b"STARTTLS\r\n") == b"503 5.5.1 TLS already active\r\n"
    assert h.conn.received_protocol == "ESMTPS"


def test_starttls_refused_by_application_keeps_cleartext() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if isinstance(event, StartTLS):
            return Reply(454, "TLS not available due to temporary reason")
        return conn.default_reply(event)

    run_transcript(
        Harness(TLS, app=app),
        """
        S: 220 mx.example.org ESMTP
        C: STARTTLS
        S: 454 4.7.0 TLS not available due to temporary reason
        C: NOOP
        S: 250 2.0.0 OK
        """,
    )


def test_starttls_errors() -> None:
    run_transcript(
        Harness(),
        """
        S: 220 mx.example.org ESMTP
        C: STARTTLS
        S: 502 5.5.1 STARTTLS not available
        """,
    )
    h = Harness(TLS)
    h.greet()
    assert h.feed(b"STARTTLS now\r\n") == b"501 5.5.4 Syntax: STARTTLS\r\n"
    h.feed(b"EHLO a.example\r\nMAIL FROM:<a@example.net>\r\n")
    assert h.feed(b"STARTTLS\r\n") == (
        b"503 5.5.1 STARTTLS not allowed during a mail transaction\r\n"
    )
    with pytest.raises(LocalProtocolError):
        h.conn.start_tls_done()


def test_auth_needs_tls_when_configured() -> None:
    run_transcript(
        Harness(TLS),
        f"""
        S: 220 mx.example.org ESMTP
        C: EHLO a.example
        C: AUTH PLAIN {PLAIN_TIM}
        S: 250-mx.example.org
        S: 250-PIPELINING
        S: 250-SIZE 36700160
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 STARTTLS
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        """,
    )


def authenticated_app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, AuthAttempt):
        if event.credentials.matches_secret("secret"):
            return Reply(235, "Authentication successful")
        return Reply(535, "Authentication credentials invalid")
    return conn.default_reply(event)


SMTPS = SMTPServerConfig(
    hostname=HOST, tls_active=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5")
)


def authed(config: SMTPServerConfig = SMTPS) -> Harness:
    h = Harness(config, app=authenticated_app)
    h.greet()
    out = h.feed(b"EHLO client.example.net\r\n")
    assert out.endswith(b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
    return h


def test_auth_plain_with_initial_response() -> None:
    h = authed()
    assert h.feed(f"AUTH PLAIN {b64(chr(0) + 'tim' + chr(0) + 'secret')}\r\n".encode()) == (
        b"235 2.7.0 Authentication successful\r\n"
    )
    assert h.conn.auth_identity == "tim"
    assert h.conn.received_protocol == "ESMTPSA"
    # RFC 4954 section 4: no second AUTH once authenticated.
    assert h.feed(b"AUTH PLAIN\r\n") == b"503 5.5.1 Already authenticated\r\n"


def test_auth_plain_without_initial_response_gets_empty_challenge() -> None:
    h = authed()
    assert h.feed(b"AUTH PLAIN\r\n") == b"334 \r\n"
    assert h.conn.state is SMTPState.AUTH and h.conn.should_flush
    assert h.feed(f"{b64(chr(0) + 'tim' + chr(0) + 'wrong')}\r\n".encode()) == (
        b"535 5.7.8 Authentication credentials invalid\r\n"
    )
    assert h.conn.auth_identity is None and h.conn.state is SMTPState.READY


def test_auth_login_transcript() -> None:
    h = authed()
    run_transcript(
        h,
        f"""
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: {b64("tim")}
        S: 334 UGFzc3dvcmQ6
        C: {b64("secret")}
        S: 235 2.7.0 Authentication successful
        """,
    )
    assert [type(e) for e in h.events[-3:]] == [AuthChallenge, AuthChallenge, AuthAttempt]


def test_auth_cram_md5_uses_the_nonce() -> None:
    h = authed()
    out = h.feed(b"AUTH CRAM-MD5\r\n")
    challenge = base64.b64decode(out[4:-2])
    assert challenge == b"<nonce42.1@mx.example.org>"
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    assert h.feed(base64.b64encode(f"tim {digest}".encode()) + b"\r\n") == (
        b"235 2.7.0 Authentication successful\r\n"
    )


@pytest.mark.parametrize(
    ("exchange", "reply"),
    [
        (b"AUTH LOGIN\r\n*\r\n", b"501 5.7.0 Authentication cancelled\r\n"),
        (b"AUTH LOGIN\r\n!!!\r\n", b"501 5.5.2 invalid base64 in SASL response\r\n"),
        (b"AUTH PLAIN !!!\r\n", b"501 5.5.2 invalid base64 in SASL response\r\n"),
        (b"AUTH PLAIN dGlt\r\n", b"501 5.5.2 PLAIN response must be authzid NUL authcid NUL password\r\n"),
        (b"AUTH CRAM-MD5 dGlt\r\n", b"501 5.5.2 CRAM-MD5 does not take an initial response\r\n"),
        (b"AUTH GSSAPI\r\n", b"504 5.5.4 Unrecognized authentication type 'GSSAPI'\r\n"),
        (b"AUTH\r\n", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
        (b"AUTH LOGIN\r\n" + b"A" * 13000 + b"\r\n", b"500 5.5.6 Authentication exchange line is too long\r\n"),
    ],
)  # fmt: skip
def test_auth_error_paths(exchange: bytes, reply: bytes) -> None:
    h = authed()
    out = h.feed(exchange)
    assert out.split(b"\r\n")[-2] + b"\r\n" == reply
    assert h.conn.state is SMTPState.READY and h.conn.auth_identity is None
    assert h.feed(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_auth_after_helo_and_during_transaction() -> None:
    h = Harness(SMTPS, app=authenticated_app)
    h.greet()
    h.feed(b"HELO a.example\r\n")
    assert h.feed(b"AUTH PLAIN\r\n") == b"503 5.5.1 Send EHLO first\r\n"
    h.feed(b"EHLO a.example\r\nMAIL FROM:<a@example.net>\r\n")
    assert h.feed(b"AUTH PLAIN\r\n") == b"503 5.5.1 AUTH not allowed during a mail transaction\r\n"


def test_application_may_refuse_to_send_a_challenge() -> None:
    def app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        if isinstance(event, AuthChallenge):
            return Reply(454, "Temporary authentication failure")
        return conn.default_reply(event)

    h = Harness(SMTPS, app=app)
    h.greet()
    h.feed(b"EHLO a.example\r\n")
    assert h.feed(b"AUTH LOGIN\r\n") == b"454 4.0.0 Temporary authentication failure\r\n"
    assert h.conn.state is SMTPState.READY


def test_mail_auth_parameter_is_surfaced() -> None:
    h = authed()
    h.feed(b"MAIL FROM:<a@example.net> AUTH=tim+40example.net\r\n")
    mail = h.events[-1]
    assert isinstance(mail, MailFrom) and mail.params.auth == "tim@example.net"


def test_starttls_resets_authentication() -> None:
    config = SMTPServerConfig(
        hostname=HOST, tls_available=True, auth_mechanisms=("PLAIN",), auth_requires_tls=False
    )
    h = Harness(config, app=authenticated_app)
    h.greet()
    h.feed(b"EHLO a.example\r\n")
    h.feed(f"AUTH PLAIN {b64(chr(0) + 'tim' + chr(0) + 'secret')}\r\n".encode())
    assert h.conn.auth_identity == "tim"
    assert h.feed(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    h.conn.start_tls_done()
    assert h.conn.auth_identity is None and not h.conn.extended


# ---- pipelining flush points (RFC 2920 section 3.1) -------------------------------------


def test_should_flush_only_after_the_last_command_of_a_group() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    conn.send(Reply(220, "hi"))
    conn.receive_data(b"EHLO a.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
    flushes = []
    for _ in range(3):
        event = conn.next_event()
        assert not conn.should_flush  # a reply is owed
        conn.send(conn.default_reply(event))  # type: ignore[arg-type]
        flushes.append(conn.should_flush)
    assert flushes == [False, False, True]
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"DATA\r\nearly body\r\n")
    conn.send(conn.default_reply(conn.next_event()))  # type: ignore[arg-type]
    assert conn.should_flush  # 354 is a sync point even with data already buffered


def test_flush_is_required_on_a_split_command() -> None:
    conn = ServerConnection(SMTPServerConfig(hostname=HOST), nonce="n")
    conn.send(Reply(220, "hi"))
    conn.receive_data(b"HELO a.example\r\nNOO")
    event = conn.next_event()
    assert isinstance(event, Hello)
    conn.send(conn.default_reply(event))
    assert conn.should_flush  # only a partial command is buffered
    conn.receive_data(b"P\r\n")
    assert type(conn.next_event()).__name__ == "Noop"


def test_quit_and_closing_violations_are_flush_points() -> None:
    h = Harness(SMTPServerConfig(hostname=HOST, max_errors=1))
    h.greet()
    h.feed(b"BOGUS\r\nNOOP\r\n")
    assert isinstance(h.events[-1], ProtocolViolation) and h.conn.should_flush
    assert h.conn.state is SMTPState.CLOSED
