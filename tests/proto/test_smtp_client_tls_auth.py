"""SMTP client engine: STARTTLS (RFC 3207), require_tls, and AUTH (RFC 4954) by mechanism.

PLAIN, LOGIN and CRAM-MD5 run against our server engine's SaslServer; XOAUTH2 and
OAUTHBEARER (which our server does not offer) against scripted server replies.
"""

from __future__ import annotations

import base64

import pytest

from nosend_proto import RemoteProtocolError
from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    Authenticate,
    AuthFailed,
    AuthSucceeded,
    Ready,
    Recipient,
    SessionFailed,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_proto.smtp_events import AuthAttempt, Reply, SMTPEvent, StartTLS
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig
from tests.proto.smtp_client_support import Link, Mailer, client_events, crlf
from tests.proto.smtp_driver import HOST, default_app

SECRET = "tanstaaftanstaaf"
MECHS = ("PLAIN", "LOGIN", "CRAM-MD5")
TLS_SERVER = SMTPServerConfig(hostname=HOST, tls_available=True, auth_mechanisms=MECHS)
TLS_CLIENT = SMTPClientConfig(local_hostname="boat.example.net")
REQUIRE = SMTPClientConfig(local_hostname="boat.example.net", require_tls=True)
MESSAGE = (Transaction("tim@boat.example", (Recipient("a@example.org"),)), [b"hi\r\n"])


def checks_password(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, AuthAttempt):
        if event.credentials.username == "tim" and event.credentials.matches_secret(SECRET):
            return Reply(235, "Authentication successful")
        return Reply(535, "Authentication credentials invalid")
    return default_app(conn, event)


def test_starttls_then_ehlo_again_then_auth_then_mail() -> None:
    link = Link(TLS_CLIENT, TLS_SERVER, checks_password)
    mailer = Mailer(link, [MESSAGE], auth=Authenticate("tim", SECRET, ("PLAIN",)))
    [result] = mailer.run()
    assert result.accepted and link.server.messages == [b"hi\r\n"]
    readies = [e for e in mailer.events if isinstance(e, Ready)]
    assert len(readies) == 1 and readies[0].tls  # no Ready before TLS
    assert "AUTH" in readies[0].extensions and "STARTTLS" not in readies[0].extensions
    assert link.writes[:3] == [
        b"EHLO boat.example.net\r\n",
        b"STARTTLS\r\n",
        b"EHLO boat.example.net\r\n",  # RFC 3207 section 4.2: everything learnt is dropped
    ]
    assert link.writes[3].startswith(b"AUTH PLAIN ")  # initial response: one round trip
    assert link.round_trips == 5
    assert link.client.tls_active and link.client.authenticated == "PLAIN"


@pytest.mark.parametrize(("mech", "trips"), [("PLAIN", 1), ("LOGIN", 3), ("CRAM-MD5", 2)])
def test_each_password_mechanism_against_our_server(mech: str, trips: int) -> None:
    link = Link(TLS_CLIENT, TLS_SERVER, checks_password)
    mailer = Mailer(link, [], auth=Authenticate("tim", SECRET, (mech,)), quit=False)
    mailer.run()
    [success] = [e for e in mailer.events if isinstance(e, AuthSucceeded)]
    assert success.mechanism == mech and success.reply.code == 235
    assert link.round_trips == 3 + trips  # EHLO, STARTTLS, EHLO, then the exchange
    if mech == "CRAM-MD5":
        # RFC 2195: only a keyed digest crosses the wire, never the secret.
        answer = base64.b64decode(link.writes[4].strip())
        assert answer.startswith(b"tim ") and SECRET.encode() not in answer


def test_the_strongest_allowed_and_offered_mechanism_is_chosen() -> None:
    link = Link(TLS_CLIENT, TLS_SERVER, checks_password)
    mailer = Mailer(link, [], auth=Authenticate("tim", SECRET, ("LOGIN", "PLAIN", "CRAM-MD5")))
    mailer.run()
    assert any(isinstance(e, AuthSucceeded) and e.mechanism == "CRAM-MD5" for e in mailer.events)


def test_wrong_password_fails_and_the_session_goes_on() -> None:
    link = Link(TLS_CLIENT, TLS_SERVER, checks_password)
    mailer = Mailer(link, [MESSAGE], auth=Authenticate("tim", "wrong", ("PLAIN",)))
    mailer.run()
    [failed] = [e for e in mailer.events if isinstance(e, AuthFailed)]
    assert failed.reply is not None and failed.reply.code == 535 and failed.mechanism == "PLAIN"
    assert link.client.authenticated is None
    assert len(mailer.results) == 1  # the transaction was still tried (the server decides)


def test_auth_in_cleartext_is_refused_locally() -> None:
    server = SMTPServerConfig(hostname=HOST, auth_mechanisms=MECHS, auth_requires_tls=False)
    link = Link(SMTPClientConfig(local_hostname="boat.example.net"), server, checks_password)
    mailer = Mailer(link, [], auth=Authenticate("tim", SECRET, ("PLAIN",)), quit=False)
    mailer.run()
    [failed] = [e for e in mailer.events if isinstance(e, AuthFailed)]
    assert failed.reply is None and failed.reason == "tls-required"
    assert link.writes == [b"EHLO boat.example.net\r\n"]  # the secret never left


def test_no_allowed_mechanism_offered() -> None:
    link = Link(TLS_CLIENT, TLS_SERVER, checks_password)
    mailer = Mailer(link, [], auth=Authenticate("tim", "token", ("XOAUTH2",)), quit=False)
    mailer.run()
    [failed] = [e for e in mailer.events if isinstance(e, AuthFailed)]
    assert failed.reason == "no-mechanism" and failed.mechanism is None


# -- require_tls ---------------------------------------------------------------------------


def test_require_tls_without_starttls_refuses_to_go_on_in_clear() -> None:
    link = Link(REQUIRE, SMTPServerConfig(hostname=HOST, auth_mechanisms=MECHS))
    mailer = Mailer(link, [MESSAGE], auth=Authenticate("tim", SECRET, ("PLAIN",)))
    mailer.run()
    [failed] = [e for e in mailer.events if isinstance(e, SessionFailed)]
    assert failed.reason == "tls-unavailable" and failed.reply is None
    assert not any(isinstance(e, Ready) for e in mailer.events)
    # Neither AUTH nor MAIL went out in cleartext: EHLO, then QUIT.
    assert link.writes == [b"EHLO boat.example.net\r\n", b"QUIT\r\n"]
    assert link.client.state is ClientState.CLOSED


def refuses_tls(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, StartTLS):
        return Reply(454, "TLS not available due to temporary reason")
    return default_app(conn, event)


def test_starttls_refused() -> None:
    link = Link(REQUIRE, TLS_SERVER, refuses_tls)
    mailer = Mailer(link, [MESSAGE])
    mailer.run()
    [failed] = [e for e in mailer.events if isinstance(e, SessionFailed)]
    assert failed.reason == "tls-unavailable" and failed.reply is not None
    assert failed.reply.code == 454 and link.server.messages == []
    # Without require_tls the session goes on in cleartext.
    link = Link(TLS_CLIENT, TLS_SERVER, refuses_tls)
    mailer = Mailer(link, [MESSAGE])
    mailer.run()
    [ready] = [e for e in mailer.events if isinstance(e, Ready)]
    assert not ready.tls and link.server.messages == [b"hi\r\n"]


# -- STARTTLS response injection (RFC 3207 section 4, CVE-2011-0411) ------------------------

EHLO_TLS = "250-mx.example.org\n250-PIPELINING\n250-AUTH PLAIN\n250 STARTTLS\n"


def at_starttls() -> ClientConnection:
    conn = ClientConnection(TLS_CLIENT)
    conn.receive_data(crlf("220 mx.example.org ESMTP\n" + EHLO_TLS))
    client_events(conn)
    assert conn.data_to_send() == b"EHLO boat.example.net\r\nSTARTTLS\r\n"
    return conn


def test_replies_injected_with_the_220_are_detected() -> None:
    conn = at_starttls()
    conn.receive_data(crlf("220 go ahead\n250-mx.example.org\n250 AUTH PLAIN\n"))
    with pytest.raises(RemoteProtocolError, match="injection"):
        client_events(conn)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_bytes_after_the_220_before_the_handshake_are_detected() -> None:
    conn = at_starttls()
    conn.receive_data(crlf("220 go ahead\n"))
    [event] = client_events(conn)
    assert isinstance(event, TLSHandshakeNeeded) and conn.state is ClientState.TLS_PENDING
    conn.receive_data(crlf("250 injected\n"))
    with pytest.raises(RemoteProtocolError, match="injection"):
        conn.start_tls_done()


def test_extensions_are_forgotten_after_starttls() -> None:
    conn = at_starttls()
    assert "AUTH" in conn.extensions
    conn.receive_data(crlf("220 go ahead\n"))
    client_events(conn)
    conn.start_tls_done()
    assert conn.extensions.keywords == frozenset() and conn.tls_active
    assert conn.data_to_send() == b"EHLO boat.example.net\r\n"
    conn.receive_data(crlf("250-mx.example.org\n250 AUTH XOAUTH2 OAUTHBEARER\n"))
    [ready] = client_events(conn)
    assert isinstance(ready, Ready) and ready.tls
    assert ready.extensions.auth == ("XOAUTH2", "OAUTHBEARER")


# -- XOAUTH2 and OAUTHBEARER against a scripted server --------------------------------------

TOKEN = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
ERROR_JSON = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'


def oauth_ready(mechs: str = "XOAUTH2 OAUTHBEARER") -> ClientConnection:
    config = SMTPClientConfig(local_hostname="boat.example.net", tls_active=True)
    conn = ClientConnection(config)
    conn.receive_data(crlf(f"220 smtp.example.com\n250-smtp.example.com\n250 AUTH {mechs}\n"))
    assert isinstance(client_events(conn)[-1], Ready)
    conn.data_to_send()
    return conn


def test_xoauth2_success_in_one_round_trip() -> None:
    conn = oauth_ready("XOAUTH2")
    out = conn.send(Authenticate("someuser@example.com", TOKEN, ("XOAUTH2",)))
    initial = f"user=someuser@example.com\x01auth=Bearer {TOKEN}\x01\x01".encode()
    assert out == b"AUTH XOAUTH2 " + base64.b64encode(initial) + b"\r\n"
    conn.receive_data(crlf("235 2.7.0 Accepted\n"))
    [event] = client_events(conn)
    assert isinstance(event, AuthSucceeded) and event.mechanism == "XOAUTH2"
    assert conn.state is ClientState.READY


@pytest.mark.parametrize(("mech", "answer"), [("XOAUTH2", b"\r\n"), ("OAUTHBEARER", b"AQ==\r\n")])
def test_token_failure_challenge_gets_the_dummy_answer(mech: str, answer: bytes) -> None:
    conn = oauth_ready()
    conn.send(Authenticate("someuser@example.com", TOKEN, (mech,)))
    conn.receive_data(b"334 " + base64.b64encode(ERROR_JSON) + b"\r\n")
    assert client_events(conn) == []
    # RFC 7628 section 3.2.3 (0x01) / Google's XOAUTH2 (empty); then the server fails it.
    assert conn.data_to_send() == answer
    conn.receive_data(crlf("535-5.7.8 Username and Password not accepted.\n535 5.7.8 Learn more\n"))
    [failed] = client_events(conn)
    assert isinstance(failed, AuthFailed) and failed.mechanism == mech
    assert failed.reply is not None and failed.reply.enhanced == "5.7.8"
    assert failed.error == ERROR_JSON.decode()


def test_oauthbearer_is_preferred_and_carries_host_and_port() -> None:
    conn = oauth_ready()
    out = conn.send(
        Authenticate("u@example.com", TOKEN, ("XOAUTH2", "OAUTHBEARER"), host="h", port=587)
    )
    assert out.startswith(b"AUTH OAUTHBEARER ")
    decoded = base64.b64decode(out.split()[2])
    assert (
        decoded
        == f"n,a=u@example.com,\x01host=h\x01port=587\x01auth=Bearer {TOKEN}\x01\x01".encode()
    )


def test_long_token_goes_after_an_empty_challenge() -> None:
    # RFC 4954 section 4: the AUTH line must fit the command line limit (512 octets).
    conn = oauth_ready("XOAUTH2")
    token = "t" * 2000
    assert conn.send(Authenticate("someuser@example.com", token, ("XOAUTH2",))) == (
        b"AUTH XOAUTH2\r\n"
    )
    conn.receive_data(b"334 \r\n")
    assert client_events(conn) == []
    line = conn.data_to_send()
    assert len(line) > 2000 and line.endswith(b"\r\n")
    assert token.encode() in base64.b64decode(line.strip())
    conn.receive_data(crlf("235 2.7.0 Accepted\n"))
    assert isinstance(client_events(conn)[0], AuthSucceeded)


def test_undecodable_challenge_cancels_the_exchange() -> None:
    conn = oauth_ready("XOAUTH2")
    conn.send(Authenticate("someuser@example.com", TOKEN, ("XOAUTH2",)))
    conn.receive_data(b"334 not base64!\r\n")
    client_events(conn)
    assert conn.data_to_send() == b"*\r\n"  # RFC 4954 section 4: cancel
    conn.receive_data(crlf("501 5.7.0 cancelled\n"))
    [failed] = client_events(conn)
    assert isinstance(failed, AuthFailed) and failed.reply is not None
    assert failed.reply.code == 501
