"""Transcripts of the POP3 server engine: every command in every state, and the errors.

Each test is a short client/server exchange (RFC 1939 examples where they exist) driven
through the test Session, which answers events the way a real session would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from nosend_proto import LocalProtocolError, SaslClient
from nosend_proto.pop3_events import (
    NEED_DATA,
    NEED_FLUSH,
    AuthAttempt,
    ConnectionClosed,
    Greeting,
    GreetingRefused,
    LoginAccepted,
    LoginRejected,
    MessageChunk,
    MessageEnd,
    MessageInfo,
    MessageUnavailable,
    POP3ServerConfig,
    Quit,
    Retrieve,
    StartTLS,
    TLSReady,
    TLSRefused,
    TooManyErrors,
    Top,
    UpdateApplied,
)
from nosend_proto.pop3_state import (
    ANSWERS,
    COMMANDS,
    KNOWN_COMMANDS,
    POP3State,
    ServerConnection,
    wire_size,
)
from tests.proto.test_pop3_support import (
    HOST,
    MESSAGES,
    NONCE,
    PASSWORD,
    USER,
    Session,
    config,
    logged_in,
    reference_encode,
)

TIMESTAMP = f"<{NONCE}@{HOST}>"
SIZES = [wire_size(m) for m in MESSAGES]
TOTAL = sum(SIZES)


# --- greeting ------------------------------------------------------------------------


def test_greeting_carries_apop_timestamp() -> None:
    session = Session.start()
    assert session.greeting == f"+OK POP3 server ready {TIMESTAMP}\r\n".encode()
    assert session.conn.state is POP3State.AUTHORIZATION


def test_greeting_without_apop_has_no_timestamp() -> None:
    session = Session.start(config(apop_enabled=False))
    assert session.greeting == b"+OK POP3 server ready\r\n"


def test_greeting_refused_closes() -> None:
    conn = ServerConnection(config(), nonce=NONCE)
    assert conn.send(GreetingRefused("busy")) == b"-ERR [SYS/TEMP] busy\r\n"
    assert conn.next_event() == ConnectionClosed(peer_closed=False)


def test_nothing_is_read_before_the_greeting() -> None:
    conn = ServerConnection(config(), nonce=NONCE)
    conn.receive_data(b"CAPA\r\n")
    with pytest.raises(LocalProtocolError):
        conn.next_event()


@pytest.mark.parametrize("nonce", ["", "a<b", "a@b", "a b", "x" * 201])
def test_bad_nonce_is_the_applications_error(nonce: str) -> None:
    with pytest.raises(LocalProtocolError):
        ServerConnection(config(), nonce=nonce)


# --- AUTHORIZATION: USER/PASS --------------------------------------------------------


def test_user_pass_login() -> None:
    session = Session.start()
    assert session.say(f"USER {USER}") == "+OK send PASS\r\n"
    assert session.say(f"PASS {PASSWORD}") == f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n"
    assert session.conn.state is POP3State.TRANSACTION
    assert session.conn.username == USER
    (event,) = session.events
    assert isinstance(event, AuthAttempt)
    assert event.credentials.mechanism == "USER"
    assert event.credentials.password == PASSWORD


def test_pass_keeps_spaces_in_the_password() -> None:
    session = Session.start()
    session.say("USER someone")
    session.say("PASS two  words ")
    event = session.events[0]
    assert isinstance(event, AuthAttempt)
    assert event.credentials.password == "two  words "


def test_wrong_password_is_auth_error_and_stays_in_authorization() -> None:
    session = Session.start()
    session.say(f"USER {USER}")
    assert session.say("PASS wrong") == "-ERR [AUTH] authentication failed\r\n"
    assert session.conn.state is POP3State.AUTHORIZATION
    assert session.conn.auth_failures == 1
    assert session.conn.username is None


def test_pass_without_user() -> None:
    session = Session.start()
    assert session.say(f"PASS {PASSWORD}") == "-ERR USER first\r\n"
    assert session.conn.errors == 1


def test_pass_must_follow_user_directly() -> None:
    session = Session.start()
    session.say(f"USER {USER}")
    session.say("CAPA")
    assert session.say(f"PASS {PASSWORD}") == "-ERR USER first\r\n"


@pytest.mark.parametrize("between", ["NOOP", "BAD", "X" * 300])
def test_anything_between_user_and_pass_forgets_the_user(between: str) -> None:
    session = Session.start()
    session.say(f"USER {USER}")
    session.say(between)
    assert session.say(f"PASS {PASSWORD}") == "-ERR USER first\r\n"


def test_only_spaces_separate_arguments() -> None:
    session = logged_in()
    assert session.say("LIST  2") == f"+OK 2 {SIZES[1]}\r\n"
    assert session.say("LIST 2\u00a03") == "-ERR invalid message number\r\n"


def test_user_needs_exactly_one_argument() -> None:
    session = Session.start()
    assert session.say("USER") == "-ERR usage: USER name\r\n"
    assert session.say("USER a b") == "-ERR usage: USER name\r\n"
    session.say(f"USER {USER}")
    assert session.say("PASS") == "-ERR usage: PASS password\r\n"


def test_user_refused_without_tls_when_configured() -> None:
    session = Session.start(config(auth_requires_tls=True))
    reply = session.say(f"USER {USER}")
    assert reply == "-ERR [AUTH] plaintext authentication disallowed without TLS\r\n"


def test_user_disabled() -> None:
    session = Session.start(config(user_allowed=False))
    assert session.say(f"USER {USER}").startswith("-ERR USER/PASS not available")
    assert "USER" not in session.say("CAPA").split("\r\n")


def test_commands_are_case_insensitive() -> None:
    session = Session.start()
    session.say(f"user {USER}")
    assert session.say(f"pAsS {PASSWORD}").startswith("+OK maildrop has 3")
    assert session.say("stat") == f"+OK 3 {TOTAL}\r\n"


@pytest.mark.parametrize("code", ["IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM"])
def test_login_rejected_with_response_code_is_not_an_auth_failure(code: str) -> None:
    session = Session.start()
    session.say(f"USER {USER}")
    conn = session.conn
    conn.receive_data(f"PASS {PASSWORD}\r\n".encode())
    assert isinstance(conn.next_event(), AuthAttempt)
    assert (
        conn.send(LoginRejected("maildrop busy", code))
        == f"-ERR [{code}] maildrop busy\r\n".encode()
    )
    assert conn.auth_failures == 0
    assert conn.state is POP3State.AUTHORIZATION


def test_too_many_auth_failures() -> None:
    session = Session.start(config(max_auth_failures=2))
    session.say(f"USER {USER}")
    session.say("PASS no")
    session.say(f"USER {USER}")
    assert session.say("PASS no") == "-ERR [AUTH] authentication failed\r\n"
    assert isinstance(session.final, TooManyErrors)
    assert session.final.auth_failures == 2
    assert session.conn.state is POP3State.CLOSED
    assert session.conn.next_event() == ConnectionClosed(peer_closed=False)


# --- AUTHORIZATION: APOP (RFC 1939 section 7) ----------------------------------------


def apop_digest(secret: str = PASSWORD) -> str:
    return hashlib.md5(f"{TIMESTAMP}{secret}".encode()).hexdigest()


def test_apop_login() -> None:
    session = Session.start()
    reply = session.say(f"APOP {USER} {apop_digest()}")
    assert reply == f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n"
    event = session.events[0]
    assert isinstance(event, AuthAttempt)
    assert event.credentials.mechanism == "APOP"
    assert event.credentials.challenge == TIMESTAMP.encode()


def test_apop_rfc1939_example_digest() -> None:
    # RFC 1939 section 7: the example timestamp and secret give this digest.
    conn = ServerConnection(config(hostname="dbc.mtview.ca.us"), nonce="1896.697170952")
    conn.send(Greeting())
    conn.receive_data(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    event = conn.next_event()
    assert isinstance(event, AuthAttempt)
    assert event.credentials.matches_secret("tanstaaf")


def test_apop_wrong_digest() -> None:
    session = Session.start()
    assert session.say(f"APOP {USER} {apop_digest('nope')}").startswith("-ERR [AUTH]")


@pytest.mark.parametrize("line", ["APOP", f"APOP {USER}", f"APOP {USER} xyz", "APOP a b c"])
def test_apop_syntax(line: str) -> None:
    session = Session.start()
    assert session.say(line) == "-ERR usage: APOP name digest\r\n"


def test_apop_disabled() -> None:
    session = Session.start(config(apop_enabled=False))
    assert session.say(f"APOP {USER} {apop_digest()}") == "-ERR APOP not available\r\n"


# --- AUTHORIZATION: AUTH (RFC 5034) --------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_auth_plain_with_initial_response() -> None:
    session = Session.start()
    reply = session.say("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}".encode()))
    assert reply.startswith("+OK maildrop has 3 messages")


def test_auth_plain_with_empty_challenge() -> None:
    session = Session.start()
    assert session.say("AUTH PLAIN") == "+ \r\n"
    assert session.conn.state is POP3State.SASL
    assert session.say(b64(f"\0{USER}\0{PASSWORD}".encode())).startswith("+OK maildrop")


def test_auth_login_exchange() -> None:
    session = Session.start()
    assert session.say("AUTH LOGIN") == f"+ {b64(b'Username:')}\r\n"
    assert session.say(b64(USER.encode())) == f"+ {b64(b'Password:')}\r\n"
    assert session.say(b64(PASSWORD.encode())).startswith("+OK maildrop")


def test_auth_cram_md5_exchange() -> None:
    session = Session.start()
    reply = session.say("AUTH CRAM-MD5")
    assert reply.startswith("+ ")
    challenge = base64.b64decode(reply[2:].strip())
    assert challenge == f"<1.{NONCE}@{HOST}>".encode()
    answer = SaslClient("CRAM-MD5", USER, PASSWORD).respond(challenge)
    assert session.say(b64(answer)).startswith("+OK maildrop")


def test_each_cram_md5_challenge_differs() -> None:
    session = Session.start()
    first = session.say("AUTH CRAM-MD5")
    session.say("*")
    second = session.say("AUTH CRAM-MD5")
    assert first != second


def test_auth_wrong_password_and_cancel() -> None:
    session = Session.start()
    reply = session.say("AUTH PLAIN " + b64(f"\0{USER}\0bad".encode()))
    assert reply == "-ERR [AUTH] authentication failed\r\n"
    assert session.say("AUTH LOGIN").startswith("+ ")
    assert session.say("*") == "-ERR [AUTH] authentication cancelled\r\n"
    assert session.conn.state is POP3State.AUTHORIZATION
    assert session.say("CAPA").startswith("+OK Capability list follows")


def test_auth_bad_base64_counts_as_auth_failure() -> None:
    session = Session.start()
    session.say("AUTH LOGIN")
    assert session.say("!!!") == "-ERR [AUTH] invalid base64 in SASL response\r\n"
    assert session.conn.auth_failures == 1
    assert session.say("AUTH PLAIN @@").startswith("-ERR [AUTH] invalid base64")


def test_auth_initial_response_equals_sign_is_empty() -> None:
    session = Session.start()
    assert session.say("AUTH PLAIN =").startswith("-ERR [AUTH] PLAIN response must be")


def test_auth_unknown_mechanism_and_syntax() -> None:
    session = Session.start()
    assert session.say("AUTH GSSAPI") == "-ERR unsupported authentication mechanism\r\n"
    assert session.say("AUTH PLAIN a b").startswith("-ERR usage: AUTH")


def test_bare_auth_lists_mechanisms() -> None:
    session = Session.start()
    assert session.say("AUTH") == (
        "+OK list of SASL mechanisms follows\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n.\r\n"
    )


def test_cleartext_mechanisms_need_tls_when_configured() -> None:
    session = Session.start(config(auth_requires_tls=True))
    assert session.say("AUTH") == "+OK list of SASL mechanisms follows\r\nCRAM-MD5\r\n.\r\n"
    reply = session.say("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}".encode()))
    assert reply == "-ERR [AUTH] plaintext authentication disallowed without TLS\r\n"


def test_long_sasl_response_allowed_but_bounded() -> None:
    session = Session.start(config(max_sasl_line=1024))
    session.say("AUTH PLAIN")
    # Longer than the 255-octet command limit, within the SASL limit: a proper failure.
    reply = session.say(b64(b"\0" + b"u" * 300 + b"\0pw"))
    assert reply == "-ERR [AUTH] PLAIN response has an empty or overlong field\r\n"
    session.say("AUTH PLAIN")
    assert session.say("A" * 2000) == "-ERR [AUTH] SASL response too long\r\n"
    # The command limit is back after the exchange.
    assert session.say("NOOP " + "x" * 300) == "-ERR command line too long\r\n"


# --- CAPA (RFC 2449) -----------------------------------------------------------------


def test_capa_in_authorization() -> None:
    session = Session.start(config(tls_available=True, expire="31", login_delay=60, utf8=True))
    assert session.say("CAPA") == (
        "+OK Capability list follows\r\n"
        "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
        "EXPIRE 31\r\nLOGIN-DELAY 60\r\nUSER\r\nSASL PLAIN LOGIN CRAM-MD5\r\nSTLS\r\n"
        "UTF8 USER\r\n.\r\n"
    )


def test_capa_in_transaction() -> None:
    session = logged_in(cfg=config(tls_available=True, expire="NEVER"))
    assert session.say("CAPA") == (
        "+OK Capability list follows\r\n"
        "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
        "EXPIRE NEVER\r\nIMPLEMENTATION nosend\r\n.\r\n"
    )


def test_capa_hides_user_and_cleartext_sasl_without_tls() -> None:
    session = Session.start(config(auth_requires_tls=True, tls_available=True))
    capa = session.say("CAPA").split("\r\n")
    assert "USER" not in capa
    assert "SASL CRAM-MD5" in capa
    assert "STLS" in capa


def test_capa_takes_no_argument() -> None:
    assert Session.start().say("CAPA x") == "-ERR usage: CAPA\r\n"


# --- STLS (RFC 2595) -----------------------------------------------------------------


def test_stls_then_user_allowed_and_capa_changes() -> None:
    session = Session.start(config(auth_requires_tls=True, tls_available=True))
    assert session.say("STLS") == "+OK Begin TLS negotiation\r\n"
    assert session.tls_started == 1
    assert session.conn.tls_active
    capa = session.say("CAPA").split("\r\n")
    assert "USER" in capa and "STLS" not in capa
    assert "SASL PLAIN LOGIN CRAM-MD5" in capa
    assert session.say(f"USER {USER}") == "+OK send PASS\r\n"


def test_stls_discards_pipelined_bytes() -> None:
    session = Session.start(config(tls_available=True))
    out = session.feed(b"STLS\r\nUSER evil\r\nPASS injected\r\n")
    assert out == b"+OK Begin TLS negotiation\r\n"
    assert session.conn.next_event() is NEED_DATA
    assert [type(e) for e in session.events] == [StartTLS]


def test_stls_drops_a_line_should_flush_found_ahead() -> None:
    # should_flush looks at the next pipelined line; STLS must drop it with the rest.
    session = Session.start(config(tls_available=True))
    conn = session.conn
    conn.receive_data(b"STLS\r\nUSER evil\r\n")
    assert isinstance(conn.next_event(), StartTLS)
    assert conn.should_flush is False  # "USER evil" is a complete line, held ahead
    assert conn.send(TLSReady()) == b"+OK Begin TLS negotiation\r\n"
    assert conn.should_flush is True
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"PASS secret\r\n")  # had USER evil been read, this would log in
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"-ERR USER first\r\n"


def test_stls_refused_by_application() -> None:
    session = Session.start(config(tls_available=True))
    conn = session.conn
    conn.receive_data(b"STLS\r\n")
    assert isinstance(conn.next_event(), StartTLS)
    assert conn.send(TLSRefused("no certificate")) == b"-ERR [SYS/TEMP] no certificate\r\n"
    assert not conn.tls_active
    assert conn.state is POP3State.AUTHORIZATION


def test_stls_errors() -> None:
    assert Session.start().say("STLS") == "-ERR STLS not available\r\n"
    session = Session.start(config(tls_available=True, tls_active=True))
    assert session.say("STLS") == "-ERR command not permitted when TLS active\r\n"
    assert Session.start(config(tls_available=True)).say("STLS x") == "-ERR usage: STLS\r\n"
    assert logged_in().say("STLS") == "-ERR STLS not valid in the TRANSACTION state\r\n"


# --- UTF8 (RFC 6856) -----------------------------------------------------------------


def test_utf8_command() -> None:
    session = Session.start(config(utf8=True))
    assert session.say("UTF8") == "+OK UTF8 enabled\r\n"
    assert session.conn.utf8_enabled
    assert session.say("USER jürgen") == "+OK send PASS\r\n"
    session.say("PASS pässword")
    event = session.events[0]
    assert isinstance(event, AuthAttempt)
    assert event.credentials.username == "jürgen"


def test_utf8_disabled_is_unknown() -> None:
    assert Session.start().say("UTF8") == "-ERR unknown command\r\n"


# --- AUTHORIZATION: QUIT and bad commands --------------------------------------------


def test_quit_in_authorization_deletes_nothing() -> None:
    session = Session.start()
    assert session.say("QUIT") == f"+OK {HOST} POP3 server signing off\r\n"
    assert session.final == ConnectionClosed(peer_closed=False)
    assert not any(isinstance(e, Quit) for e in session.events)


@pytest.mark.parametrize("command", sorted(COMMANDS[POP3State.TRANSACTION] - {"CAPA", "QUIT"}))
def test_transaction_commands_refused_in_authorization(command: str) -> None:
    session = Session.start()
    assert session.say(f"{command} 1") == (
        f"-ERR {command} not valid in the AUTHORIZATION state\r\n"
    )


@pytest.mark.parametrize("line", ["", "LAST", "XYZZY", "RETRX 1", " USER bob"])
def test_unknown_commands(line: str) -> None:
    assert Session.start().say(line) == "-ERR unknown command\r\n"


def test_line_limit_is_255_octets_including_crlf() -> None:
    session = Session.start()
    name = "u" * (255 - len("USER \r\n"))
    assert session.say(f"USER {name}") == "+OK send PASS\r\n"
    assert session.say(f"USER {name}u") == "-ERR command line too long\r\n"


def test_invalid_bytes_in_command() -> None:
    session = Session.start()
    assert session.feed(b"USER \xff\r\n") == b"-ERR command is not valid UTF-8\r\n"
    assert session.feed(b"USER a\0b\r\n") == b"-ERR control characters in command\r\n"


def test_bare_lf_terminates_a_command() -> None:
    assert Session.start().feed(b"CAPA\n").startswith(b"+OK Capability list")


def test_too_many_bad_commands() -> None:
    session = Session.start(config(max_errors=3))
    out = session.feed(b"A\r\nB\r\nC\r\nD\r\n")
    assert out == b"-ERR unknown command\r\n" * 3
    assert isinstance(session.final, TooManyErrors)
    assert session.final.errors == 3
    assert session.conn.errors == 3
    session.conn.receive_data(b"CAPA\r\n")  # ignored after the end
    assert session.conn.next_event() == ConnectionClosed(peer_closed=False)


# --- TRANSACTION (RFC 1939 section 5) ------------------------------------------------


def test_stat() -> None:
    assert logged_in().say("STAT") == f"+OK 3 {TOTAL}\r\n"


def test_list_all_and_one() -> None:
    session = logged_in()
    assert session.say("LIST") == (
        f"+OK 3 messages ({TOTAL} octets)\r\n1 {SIZES[0]}\r\n2 {SIZES[1]}\r\n3 {SIZES[2]}\r\n.\r\n"
    )
    assert session.say("LIST 2") == f"+OK 2 {SIZES[1]}\r\n"


def test_uidl_all_and_one() -> None:
    session = logged_in()
    assert session.say("UIDL") == (
        "+OK unique-id listing follows\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"
    )
    assert session.say("UIDL 3") == "+OK 3 uid-3\r\n"


@pytest.mark.parametrize("command", ["LIST", "UIDL", "DELE", "RETR"])
@pytest.mark.parametrize(
    ("arg", "reason"),
    [
        ("0", "no such message, only 3 messages in maildrop"),
        ("4", "no such message, only 3 messages in maildrop"),
        ("x", "invalid message number"),
        ("-1", "invalid message number"),
        ("1234567890", "invalid message number"),
        ("１", "invalid message number"),  # a fullwidth digit is not a number here
    ],
)
def test_bad_message_numbers(command: str, arg: str, reason: str) -> None:
    assert logged_in().say(f"{command} {arg}") == f"-ERR {reason}\r\n"


def test_dele_hides_message_but_keeps_numbers() -> None:
    session = logged_in()
    assert session.say("DELE 2") == "+OK message 2 deleted\r\n"
    assert session.say("DELE 2") == "-ERR message 2 already deleted\r\n"
    assert session.say("STAT") == f"+OK 2 {SIZES[0] + SIZES[2]}\r\n"
    assert session.say("LIST") == (
        f"+OK 2 messages ({SIZES[0] + SIZES[2]} octets)\r\n1 {SIZES[0]}\r\n3 {SIZES[2]}\r\n.\r\n"
    )
    assert session.say("UIDL") == "+OK unique-id listing follows\r\n1 uid-1\r\n3 uid-3\r\n.\r\n"
    for command in ("LIST 2", "UIDL 2", "RETR 2", "TOP 2 0"):
        assert session.say(command) == "-ERR message 2 already deleted\r\n"
    assert session.say("LIST 3") == f"+OK 3 {SIZES[2]}\r\n"
    assert session.conn.deleted_msgnos() == (2,)


def test_rset_unmarks() -> None:
    session = logged_in()
    session.say("DELE 1")
    session.say("DELE 3")
    assert session.say("RSET") == f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n"
    assert session.say("STAT") == f"+OK 3 {TOTAL}\r\n"
    assert session.conn.deleted_msgnos() == ()


def test_noop() -> None:
    # RFC 1957: always text after the status indicator, for clients that need the space.
    assert logged_in().say("NOOP") == "+OK NOOP\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("STAT 1", "-ERR usage: STAT\r\n"),
        ("LIST 1 2", "-ERR usage: LIST [msg]\r\n"),
        ("UIDL 1 2", "-ERR usage: UIDL [msg]\r\n"),
        ("DELE", "-ERR usage: DELE msg\r\n"),
        ("RETR", "-ERR usage: RETR msg\r\n"),
        ("RETR 1 2", "-ERR usage: RETR msg\r\n"),
        ("TOP 1", "-ERR usage: TOP msg n\r\n"),
        ("TOP 1 x", "-ERR invalid number of lines\r\n"),
        ("TOP 1 -1", "-ERR invalid number of lines\r\n"),
        ("RSET 1", "-ERR usage: RSET\r\n"),
        ("NOOP 1", "-ERR usage: NOOP\r\n"),
        ("QUIT 1", "-ERR usage: QUIT\r\n"),
    ],
)
def test_transaction_syntax_errors(line: str, reply: str) -> None:
    session = logged_in()
    assert session.say(line) == reply
    assert session.conn.state is POP3State.TRANSACTION
    assert session.conn.errors == 1


@pytest.mark.parametrize("command", ["USER bob", "PASS x", "APOP a b", "AUTH PLAIN", "UTF8"])
def test_authorization_commands_refused_in_transaction(command: str) -> None:
    keyword = command.split()[0]
    assert logged_in().say(command) == f"-ERR {keyword} not valid in the TRANSACTION state\r\n"


# --- RETR and TOP (RFC 1939 section 5 and 7) -----------------------------------------


@pytest.mark.parametrize("msgno", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1000])
def test_retr_streams_stuffed_content(msgno: int, chunk_size: int) -> None:
    session = logged_in(chunk_size=chunk_size)
    reply = session.say(f"RETR {msgno}").encode()
    body = reference_encode(MESSAGES[msgno - 1])
    assert reply == f"+OK {SIZES[msgno - 1]} octets\r\n".encode() + body
    assert session.events[-1] == Retrieve(msgno, session.listing()[msgno - 1])


def test_retr_example_with_dots() -> None:
    session = logged_in()
    assert session.say("RETR 3") == (
        f"+OK {SIZES[2]} octets\r\nSubject: three\r\n\r\n..\r\n...\r\nlast\r\n.\r\n"
    )


@pytest.mark.parametrize(
    ("msgno", "lines", "body"),
    [
        (1, 0, "From: a@example\r\nSubject: one\r\n\r\n"),
        (1, 1, "From: a@example\r\nSubject: one\r\n\r\nhello\r\n"),
        (1, 2, "From: a@example\r\nSubject: one\r\n\r\nhello\r\n..dot line\r\n"),
        (1, 99, "From: a@example\r\nSubject: one\r\n\r\nhello\r\n..dot line\r\n"),
        (2, 2, "From: b@example\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\n"),
        (2, 3, "From: b@example\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_top(msgno: int, lines: int, body: str, chunk_size: int) -> None:
    session = logged_in(chunk_size=chunk_size)
    reply = session.say(f"TOP {msgno} {lines}")
    assert reply == f"+OK top of message follows\r\n{body}.\r\n"
    assert session.events[-1] == Top(msgno, session.listing()[msgno - 1], lines)


def test_top_stops_wanting_content() -> None:
    session = logged_in()
    conn = session.conn
    conn.receive_data(b"TOP 1 0\r\n")
    assert isinstance(conn.next_event(), Top)
    assert conn.wants_content
    conn.send(MessageChunk(b"A: 1\n\nbody\n"))
    assert not conn.wants_content
    assert conn.send(MessageChunk(b"more body\n")) == b""
    assert conn.send(MessageEnd()) == b".\r\n"
    assert conn.state is POP3State.TRANSACTION


def test_empty_message() -> None:
    session = logged_in(messages=[b""])
    assert session.say("LIST") == "+OK 1 message (0 octets)\r\n1 0\r\n.\r\n"
    assert session.say("RETR 1") == "+OK 0 octets\r\n.\r\n"


def test_message_unavailable() -> None:
    session = logged_in(unavailable={2})
    assert session.say("RETR 2") == "-ERR [SYS/TEMP] message cannot be read\r\n"
    assert session.conn.state is POP3State.TRANSACTION
    assert session.conn.errors == 0


def test_message_unavailable_after_content_is_refused() -> None:
    conn = logged_in().conn
    conn.receive_data(b"RETR 1\r\n")
    conn.next_event()
    conn.send(MessageChunk(b"x"))
    with pytest.raises(LocalProtocolError):
        conn.send(MessageUnavailable())


# --- QUIT and UPDATE (RFC 1939 section 6) --------------------------------------------


def test_quit_hands_deletions_then_signs_off() -> None:
    session = logged_in()
    session.say("DELE 3")
    session.say("DELE 1")
    reply = session.say("QUIT")
    assert reply == f"+OK {HOST} POP3 server signing off (1 message left)\r\n"
    quit_event = session.events[-2]
    assert isinstance(quit_event, Quit)
    assert quit_event.msgnos == (1, 3)
    assert [m.uid for m in quit_event.messages] == ["uid-1", "uid-3"]
    assert session.final == ConnectionClosed(peer_closed=False)


def test_quit_with_everything_deleted() -> None:
    session = logged_in()
    session.feed(b"DELE 1\r\nDELE 2\r\nDELE 3\r\n")
    assert session.say("QUIT") == f"+OK {HOST} POP3 server signing off (maildrop empty)\r\n"


def test_quit_without_deletions_still_asks() -> None:
    session = logged_in()
    session.say("QUIT")
    assert session.applied == ()


def test_failed_update_answers_err() -> None:
    session = logged_in(fail_update=True)
    session.say("DELE 1")
    assert session.say("QUIT") == "-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert session.final == ConnectionClosed(peer_closed=False)


def test_plus_ok_after_quit_waits_for_the_application() -> None:
    conn = logged_in().conn
    conn.receive_data(b"DELE 1\r\nQUIT\r\n")
    assert isinstance(conn.next_event(), Quit)
    assert conn.data_to_send() == b"+OK message 1 deleted\r\n"
    assert conn.state is POP3State.UPDATE
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    assert conn.send(UpdateApplied()).startswith(b"+OK")


def test_dropped_connection_deletes_nothing() -> None:
    session = logged_in()
    session.say("DELE 1")
    session.close()
    assert session.final == ConnectionClosed(peer_closed=True)
    assert not any(isinstance(e, Quit) for e in session.events)


def test_partial_quit_line_at_eof_is_not_a_quit() -> None:
    session = logged_in()
    session.feed(b"DELE 1\r\nQUI")
    session.close()
    assert session.final == ConnectionClosed(peer_closed=True)
    assert not any(isinstance(e, Quit) for e in session.events)


def test_quit_pipelined_before_close_is_honoured() -> None:
    session = logged_in()
    session.conn.receive_data(b"DELE 2\r\nQUIT\r\n")
    session.conn.receive_data(b"")
    session.run()
    assert session.applied is not None and [m.uid for m in session.applied] == ["uid-2"]


def test_data_after_close_is_the_applications_error() -> None:
    conn = logged_in().conn
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")


# --- pipelining (RFC 2449 section 6.6) -----------------------------------------------


def test_pipelined_commands_answered_in_order() -> None:
    session = Session.start()
    commands = f"CAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 2\r\nDELE 1\r\nLIST\r\n"
    out = session.feed(commands.encode() + b"UIDL 9\r\nNOOP\r\nQUIT\r\n")
    one_by_one = Session.start()
    expected = b"".join(one_by_one.feed(line + b"\r\n") for line in out_lines(commands))
    expected += one_by_one.feed(b"UIDL 9\r\nNOOP\r\nQUIT\r\n")
    assert out == expected
    assert out.endswith(
        b"-ERR no such message, only 3 messages in maildrop\r\n+OK NOOP\r\n"
        + f"+OK {HOST} POP3 server signing off (2 messages left)\r\n".encode()
    )


def out_lines(commands: str) -> list[bytes]:
    return [line.encode() for line in commands.split("\r\n") if line]


def test_one_byte_at_a_time() -> None:
    script = f"USER {USER}\r\nPASS {PASSWORD}\r\nTOP 1 1\r\nDELE 2\r\nQUIT\r\n".encode()
    whole = Session.start()
    trickle = Session.start()
    expected = whole.feed(script)
    got = b"".join(trickle.feed(script[i : i + 1]) for i in range(len(script)))
    assert got == expected
    assert trickle.applied == whole.applied


def test_need_flush_bounds_engine_output() -> None:
    session = logged_in(cfg=config(max_output_buffer=100))
    conn = session.conn
    conn.receive_data(b"LIST\r\n" * 5)
    assert conn.next_event() is NEED_FLUSH
    first = conn.data_to_send()
    assert first.count(b".\r\n") == 2  # two listings passed 100 bytes, then it paused
    rest = session.run()
    assert (first + rest).count(b"+OK 3 messages") == 5


def test_send_returns_pending_replies_first() -> None:
    conn = logged_in().conn
    conn.receive_data(b"NOOP\r\nRETR 3\r\n")
    assert isinstance(conn.next_event(), Retrieve)
    expected = f"+OK NOOP\r\n+OK {SIZES[2]} octets\r\nx\r\n".encode()
    assert conn.send(MessageChunk(b"x\n")) == expected


def test_should_flush_tells_when_no_command_waits() -> None:
    conn = logged_in().conn
    conn.receive_data(b"RETR 1\r\nRETR 2\r\nNO")
    assert isinstance(conn.next_event(), Retrieve)
    assert not conn.should_flush  # RETR 2 is already here: its answer follows at once
    conn.send(MessageEnd())
    assert isinstance(conn.next_event(), Retrieve)
    assert conn.should_flush  # only half a command left: the client waits for us
    conn.send(MessageEnd())
    assert conn.next_event() is NEED_DATA


def test_per_user_expire_and_login_delay_in_capa() -> None:
    conn = Session.start(config(expire="31", login_delay=900)).conn
    conn.receive_data(f"USER {USER}\r\nPASS {PASSWORD}\r\nCAPA\r\n".encode())
    assert isinstance(conn.next_event(), AuthAttempt)
    conn.send(LoginAccepted([], expire="NEVER", login_delay=0))
    assert conn.next_event() is NEED_DATA
    capa = conn.data_to_send().decode().split("\r\n")
    assert "EXPIRE NEVER" in capa and "LOGIN-DELAY 0" in capa
    assert "EXPIRE 31" not in capa


def test_every_status_line_has_text_after_the_indicator() -> None:
    session = Session.start(config(tls_available=True, utf8=True))
    script = "CAPA\r\nAUTH\r\nUTF8\r\nUSER bob\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\n"
    script += "UIDL\r\nNOOP\r\nDELE 1\r\nRSET\r\nTOP 1 0\r\nRETR 2\r\nBAD\r\nQUIT\r\n"
    out = session.feed(script.encode())
    status = [line for line in out.split(b"\r\n") if line.startswith((b"+OK", b"-ERR"))]
    assert len(status) >= 15
    assert all(line.startswith((b"+OK ", b"-ERR ")) for line in status)


# --- the application's mistakes -----------------------------------------------------


def test_answers_out_of_turn_raise() -> None:
    conn = logged_in().conn
    for answer in (Greeting(), LoginAccepted([]), MessageEnd(), UpdateApplied(), TLSReady()):
        with pytest.raises(LocalProtocolError):
            conn.send(answer)


def test_next_event_before_answering_raises() -> None:
    conn = Session.start().conn
    conn.receive_data(f"USER {USER}\r\nPASS x\r\n".encode())
    assert isinstance(conn.next_event(), AuthAttempt)
    with pytest.raises(LocalProtocolError):
        conn.next_event()


@pytest.mark.parametrize(
    "make",
    [
        lambda: MessageInfo(-1, "a"),
        lambda: MessageInfo(1, ""),
        lambda: MessageInfo(1, "has space"),
        lambda: MessageInfo(1, "x" * 71),
        lambda: LoginAccepted([MessageInfo(1, "a"), MessageInfo(2, "a")]),
        lambda: LoginRejected("two\r\nlines"),
        lambda: LoginRejected("x", "NOT-A-CODE"),
        lambda: Greeting("a\nb"),
        lambda: POP3ServerConfig("has space"),
        lambda: POP3ServerConfig("h", max_command_line=100),
        lambda: POP3ServerConfig("h", sasl_mechanisms=("GSSAPI",)),
        lambda: POP3ServerConfig("h", expire="soon"),
        lambda: POP3ServerConfig("h", login_delay=-1),
        lambda: POP3ServerConfig("h", max_errors=0),
        lambda: POP3ServerConfig("h", implementation="x" * 401),
        lambda: POP3ServerConfig("h", implementation="a\nb"),
        lambda: LoginAccepted([], expire="later"),
        lambda: LoginAccepted([], login_delay=-5),
    ],
)
def test_invalid_values_are_local_errors(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


def test_reply_longer_than_512_octets_is_refused() -> None:
    conn = ServerConnection(config(), nonce=NONCE)
    with pytest.raises(LocalProtocolError):
        conn.send(Greeting("x" * 600))
    assert conn.send(Greeting("y" * 400)).startswith(b"+OK yyy")


def test_state_tables_are_consistent() -> None:
    assert set(COMMANDS) | set(ANSWERS) | {POP3State.SASL, POP3State.CLOSED} == set(POP3State)
    assert KNOWN_COMMANDS == {
        "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "QUIT",
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
    }  # fmt: skip


def session_in(state: POP3State) -> Session:
    """A fresh session in AUTHORIZATION or TRANSACTION state."""
    return logged_in() if state is POP3State.TRANSACTION else Session.start()


@pytest.mark.parametrize("state", sorted(COMMANDS, key=lambda s: s.value))
@pytest.mark.parametrize("keyword", sorted(KNOWN_COMMANDS))
def test_engine_follows_the_command_table(state: POP3State, keyword: str) -> None:
    session = session_in(state)
    reply = session.say(f"{keyword} 1 1")  # arguments may be wrong; the state is what counts
    refused = reply == f"-ERR {keyword} not valid in the {state.value} state\r\n"
    if keyword == "UTF8":  # not configured here: an unknown command in every state
        assert reply.startswith("-ERR")
    else:
        assert refused == (keyword not in COMMANDS[state])


ALL_ANSWERS = [
    Greeting(),
    GreetingRefused(),
    LoginAccepted([]),
    LoginRejected(),
    MessageChunk(b"x"),
    MessageEnd(),
    MessageUnavailable(),
    UpdateApplied(),
    TLSReady(),
    TLSRefused(),
]


@pytest.mark.parametrize("answer", ALL_ANSWERS, ids=lambda a: type(a).__name__)
def test_send_follows_the_answer_table(answer: object) -> None:
    # In the reading states no answer is due; in a waiting state only its own are taken.
    for state in (POP3State.AUTHORIZATION, POP3State.TRANSACTION):
        with pytest.raises(LocalProtocolError):
            session_in(state).conn.send(answer)  # type: ignore[arg-type]
    conn = logged_in().conn
    conn.receive_data(b"RETR 1\r\n")
    assert isinstance(conn.next_event(), Retrieve)
    assert conn.state is POP3State.SENDING
    if isinstance(answer, ANSWERS[POP3State.SENDING]):
        conn.send(answer)  # type: ignore[arg-type]
    else:
        with pytest.raises(LocalProtocolError):
            conn.send(answer)  # type: ignore[arg-type]


def test_secrets_stay_out_of_reprs() -> None:
    session = Session.start()
    session.say(f"USER {USER}")
    session.say(f"PASS {PASSWORD}")
    assert PASSWORD not in repr(session.events)
    digest = hmac.new(b"k", b"m", hashlib.md5).hexdigest()
    assert digest not in repr(AuthAttempt(session.events[0].credentials))  # type: ignore[attr-defined]
