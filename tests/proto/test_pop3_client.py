"""Transcripts of the POP3 client engine against scripted server bytes.

Each test writes what a server says (RFC examples where they exist) and checks the bytes
the client writes and the events it reports; the state table is walked row by row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

import pytest

import nosend_proto
from nosend_proto import LocalProtocolError, RemoteProtocolError, pop3_client, pop3_client_events
from nosend_proto.pop3_client import (
    GREETING_TRANSITION,
    TRANSITIONS,
    ClientConnection,
    ClientState,
)
from nosend_proto.pop3_client_events import (
    NEED_DATA,
    Apop,
    Auth,
    Capa,
    Capabilities,
    CapabilitiesReceived,
    CommandFailed,
    CommandOK,
    ConnectionClosed,
    Dele,
    Greeting,
    GreetingRefused,
    List,
    ListReply,
    LoggedIn,
    LoginFailed,
    MessageBegins,
    MessageComplete,
    MessageData,
    Noop,
    POP3ClientConfig,
    POP3ClientEvent,
    POP3Command,
    Quit,
    Retr,
    Rset,
    ScanEntry,
    SignedOff,
    Stat,
    StatReply,
    Stls,
    StlsAccepted,
    Top,
    UidEntry,
    Uidl,
    UidlReply,
    UserPass,
)

S = ClientState
# RFC 1939 section 7 (APOP example).
RFC_GREETING = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"
PIPELINING_CAPA = b"+OK\r\nPIPELINING\r\nUIDL\r\nTOP\r\n.\r\n"


def pump(conn: ClientConnection) -> list[POP3ClientEvent]:
    """Every event the buffered bytes make, up to NEED_DATA or the close."""
    out: list[POP3ClientEvent] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out


def feed(conn: ClientConnection, data: bytes) -> list[POP3ClientEvent]:
    conn.receive_data(data)
    return pump(conn)


def greeted(
    greeting: bytes = RFC_GREETING, config: POP3ClientConfig | None = None
) -> ClientConnection:
    conn = ClientConnection(config)
    assert conn.state is S.GREETING
    events = feed(conn, greeting)
    assert len(events) == 1 and isinstance(events[0], Greeting)
    return conn


def pipelining(conn: ClientConnection) -> ClientConnection:
    assert conn.send(Capa()) == b"CAPA\r\n"
    (event,) = feed(conn, PIPELINING_CAPA)
    assert isinstance(event, CapabilitiesReceived) and event.capabilities.pipelining
    return conn


def logged_in(config: POP3ClientConfig | None = None, pipeline: bool = False) -> ClientConnection:
    conn = greeted(config=config)
    if pipeline:
        pipelining(conn)
    assert conn.send(UserPass("mrose", "tanstaaf")) == b"USER mrose\r\n"
    assert feed(conn, b"+OK mrose is a real hoopy frood\r\n") == []
    assert conn.data_to_send() == b"PASS tanstaaf\r\n"
    assert feed(conn, b"+OK mrose's maildrop has 2 messages (320 octets)\r\n") == [
        LoggedIn("USER", "mrose's maildrop has 2 messages (320 octets)")
    ]
    assert conn.state is S.TRANSACTION
    return conn


# --- greeting --------------------------------------------------------------------------


def test_greeting_with_apop_timestamp() -> None:
    conn = ClientConnection()
    assert conn.outstanding == 1  # the greeting is awaited like an answer
    assert conn.next_event() is NEED_DATA
    assert feed(conn, RFC_GREETING) == [
        Greeting(
            "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
            "<1896.697170952@dbc.mtview.ca.us>",
        )
    ]
    assert conn.state is S.AUTHORIZATION
    assert conn.timestamp == "<1896.697170952@dbc.mtview.ca.us>"
    assert conn.outstanding == 0


def test_greeting_without_timestamp_and_without_text() -> None:
    conn = ClientConnection()
    assert feed(conn, b"+OK\r\n") == [Greeting("", None)]
    assert conn.timestamp is None


def test_greeting_refused_closes() -> None:
    conn = ClientConnection()
    assert feed(conn, b"-ERR [SYS/TEMP] too busy\r\n") == [
        GreetingRefused("too busy", "SYS/TEMP"),
        ConnectionClosed(expected=True),
    ]
    assert conn.state is S.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send(Capa())


def test_nothing_may_be_sent_before_the_greeting() -> None:
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Capa())


@pytest.mark.parametrize(
    "line", [b"HELLO\r\n", b"+OKAY\r\n", b"+ok fine\r\n", b"220 smtp.example ESMTP\r\n"]
)
def test_malformed_status_line_is_the_servers_error(line: bytes) -> None:
    conn = ClientConnection()
    conn.receive_data(line)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is S.CLOSED
    with pytest.raises(RemoteProtocolError):  # dead for good
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(Capa())


def test_overlong_line_is_refused_before_it_is_buffered() -> None:
    conn = ClientConnection()
    conn.receive_data(b"+OK " + b"x" * 600)  # no line end yet, already too long
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_a_bare_lf_status_line_is_tolerated() -> None:
    conn = ClientConnection()
    assert feed(conn, b"+OK ready\n") == [Greeting("ready", None)]


# --- CAPA (RFC 2449) ---------------------------------------------------------------------


def test_capa_parses_every_rfc_2449_capability() -> None:
    conn = greeted()
    conn.send(Capa())
    answer = (
        b"+OK Capability list follows\r\n"
        b"TOP\r\nUSER\r\nSASL PLAIN cram-md5 XOAUTH2\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"LOGIN-DELAY 900 USER\r\nPIPELINING\r\nEXPIRE 60\r\nUIDL\r\nSTLS\r\n"
        b"IMPLEMENTATION Shlemazle-Plotz-v302\r\nX-FANCY yes\r\nUTF8 USER\r\n.\r\n"
    )
    (event,) = feed(conn, answer)
    assert event == CapabilitiesReceived(
        Capabilities(
            advertised=True,
            top=True,
            uidl=True,
            user=True,
            pipelining=True,
            stls=True,
            resp_codes=True,
            auth_resp_code=True,
            utf8=True,
            sasl=("PLAIN", "CRAM-MD5", "XOAUTH2"),
            expire="60",
            login_delay=900,
            login_delay_per_user=True,
            implementation="Shlemazle-Plotz-v302",
            other=("X-FANCY yes",),
        )
    )
    assert conn.capabilities is event.capabilities
    assert conn.pipelining


def test_capa_expire_never_per_user_and_malformed_values() -> None:
    conn = greeted()
    conn.send(Capa())
    (event,) = feed(conn, b"+OK\r\nexpire NEVER USER\r\nLOGIN-DELAY soon\r\n.\r\n")
    assert isinstance(event, CapabilitiesReceived)
    caps = event.capabilities
    assert (caps.expire, caps.expire_per_user) == ("NEVER", True)
    assert caps.login_delay is None and caps.other == ("LOGIN-DELAY soon",)


def test_server_without_capa() -> None:
    """An RFC 1939-only server answers -ERR: nothing is advertised, nothing pipelined."""
    conn = greeted()
    conn.send(Capa())
    assert feed(conn, b"-ERR unknown command\r\n") == [CapabilitiesReceived(Capabilities())]
    assert not conn.pipelining
    assert conn.state is S.AUTHORIZATION


def test_capa_list_is_bounded() -> None:
    conn = greeted(config=POP3ClientConfig(max_capabilities=3))
    conn.send(Capa())
    body = b"".join(b"X-CAP-%d\r\n" % i for i in range(1000))
    (event,) = feed(conn, b"+OK\r\n" + body + b"PIPELINING\r\n.\r\n")
    assert isinstance(event, CapabilitiesReceived)
    assert event.capabilities.other == ("X-CAP-0", "X-CAP-1", "X-CAP-2")
    assert not event.capabilities.pipelining  # past the cap: read and dropped


# --- the state table ---------------------------------------------------------------------


COMMAND_SAMPLES: list[POP3Command] = [
    Capa(),
    Stls(),
    UserPass("mrose", "tanstaaf"),
    Apop("mrose", "tanstaaf"),
    Auth("PLAIN", "mrose", "tanstaaf"),
    Stat(),
    List(),
    Uidl(),
    Top(1, 0),
    Retr(1),
    Dele(1),
    Rset(),
    Noop(),
    Quit(),
]

# An answer that completes each command in one go (+OK and -ERR forms).
OK_ANSWER: dict[type, bytes] = {
    Capa: b"+OK\r\n.\r\n",
    Stat: b"+OK 2 320\r\n",
    List: b"+OK\r\n.\r\n",
    Uidl: b"+OK\r\n.\r\n",
    Top: b"+OK\r\n.\r\n",
    Retr: b"+OK\r\n.\r\n",
}


def in_state(state: ClientState) -> ClientConnection:
    """A connection brought to ``state`` through the table's own transitions."""
    if state is S.GREETING:
        return ClientConnection()
    if state is S.AUTHORIZATION:
        return greeted()
    if state is S.TRANSACTION:
        conn = greeted()
        conn.send(Apop("mrose", "tanstaaf"))
        feed(conn, b"+OK\r\n")
        return conn
    conn = greeted()
    command = {S.STLS_SENT: Stls(), S.LOGGING_IN: Apop("mrose", "x"), S.QUITTING: Quit()}.get(
        state, Stls()
    )
    conn.send(command)
    if state is S.TLS_HANDSHAKE:
        feed(conn, b"+OK go ahead\r\n")
    if state is S.CLOSED:
        feed(conn, b"+OK\r\n")
        feed(conn, b"")
        conn = greeted()
        conn.send(Quit())
        feed(conn, b"+OK bye\r\n")
    assert conn.state is state
    return conn


@pytest.mark.parametrize(("row", "ok"), list(itertools.product(TRANSITIONS, (True, False))))
def test_state_table_row(row: tuple[ClientState, type], ok: bool) -> None:
    """Walk each row: the state once sent, then after +OK or -ERR."""
    state, kind = row
    transition = TRANSITIONS[row]
    command = next(c for c in COMMAND_SAMPLES if type(c) is kind)
    conn = in_state(state)
    conn.send(command)
    assert conn.state is (transition.sent or state)
    if isinstance(command, UserPass) and ok:
        feed(conn, b"+OK\r\n")  # USER accepted; the answer to PASS decides
        assert conn.data_to_send() == b"PASS tanstaaf\r\n"
    answer = OK_ANSWER.get(kind, b"+OK\r\n") if ok else b"-ERR no\r\n"
    events = feed(conn, answer)
    assert events and not isinstance(events[0], ConnectionClosed)
    target = transition.ok if ok else transition.err
    assert conn.state is (target or transition.sent or state)
    assert conn.outstanding == 0


@pytest.mark.parametrize("state", list(ClientState))
def test_commands_outside_the_table_are_the_applications_error(state: ClientState) -> None:
    conn = in_state(state)
    for command in COMMAND_SAMPLES:
        if (state, type(command)) not in TRANSITIONS:
            with pytest.raises(LocalProtocolError):
                conn.send(command)
    assert conn.state is state


def test_greeting_transition_matches_the_engine() -> None:
    assert greeted().state is GREETING_TRANSITION.ok
    conn = ClientConnection()
    feed(conn, b"-ERR go away\r\n")
    assert conn.state is GREETING_TRANSITION.err


# --- pipelining (RFC 2449 section 6.6) --------------------------------------------------


def test_without_pipelining_a_second_command_waits_for_the_first() -> None:
    conn = logged_in()
    conn.send(Stat())
    assert conn.outstanding == 1
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.send(Noop())
    assert feed(conn, b"+OK 2 320\r\n") == [StatReply(2, 320)]
    assert conn.send(Noop()) == b"NOOP\r\n"


def test_pipelined_answers_in_one_chunk_match_commands_in_order() -> None:
    conn = logged_in(pipeline=True)
    data = b"".join(conn.send(c) for c in (Retr(1), Dele(1), Retr(2), Dele(2), Quit()))
    assert data == b"RETR 1\r\nDELE 1\r\nRETR 2\r\nDELE 2\r\nQUIT\r\n"
    assert conn.outstanding == 5 and conn.state is S.QUITTING
    with pytest.raises(LocalProtocolError):  # nothing after QUIT
        conn.send(Noop())
    answer = (
        b"+OK 5 octets\r\nabc\r\n.\r\n+OK deleted\r\n"
        b"-ERR [SYS/TEMP] cannot read\r\n+OK deleted\r\n+OK bye\r\n"
    )
    events = feed(conn, answer)
    assert events == [
        MessageBegins(Retr(1), "5 octets"),
        MessageData(b"abc\r\n"),
        MessageComplete(Retr(1)),
        CommandOK(Dele(1), "deleted"),
        CommandFailed(Retr(2), "cannot read", "SYS/TEMP"),
        CommandOK(Dele(2), "deleted"),
        SignedOff(ok=True, updated=True, text="bye", code=None),
        ConnectionClosed(expected=True),
    ]


def test_nothing_may_follow_a_login_or_stls_before_its_answer() -> None:
    conn = pipelining(greeted())
    conn.send(Stls())
    with pytest.raises(LocalProtocolError):
        conn.send(Capa())
    conn = pipelining(greeted())
    conn.send(Capa())  # CAPA may be pipelined before a login
    conn.send(UserPass("a", "b"))
    assert conn.outstanding == 2
    with pytest.raises(LocalProtocolError):
        conn.send(Stat())


# --- STLS (RFC 2595) ---------------------------------------------------------------------


def test_stls_then_capabilities_are_asked_again() -> None:
    conn = pipelining(greeted())
    assert conn.send(Stls()) == b"STLS\r\n"
    assert feed(conn, b"+OK Begin TLS negotiation\r\n") == [StlsAccepted("Begin TLS negotiation")]
    assert conn.state is S.TLS_HANDSHAKE
    with pytest.raises(LocalProtocolError):
        conn.send(Capa())
    conn.start_tls_done()
    assert conn.tls_active and conn.state is S.AUTHORIZATION
    assert conn.capabilities == Capabilities()  # RFC 2595 section 4: forgotten
    assert not conn.pipelining
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()
    with pytest.raises(LocalProtocolError, match="already"):
        conn.send(Stls())
    assert conn.outstanding == 0


def test_stls_refused() -> None:
    conn = greeted()
    conn.send(Stls())
    assert feed(conn, b"-ERR [SYS/TEMP] no certificate\r\n") == [
        CommandFailed(Stls(), "no certificate", "SYS/TEMP")
    ]
    assert conn.state is S.AUTHORIZATION and not conn.tls_active


def test_stls_injection_in_the_same_read_is_detected() -> None:
    """CVE-2011-0411 style: a line sent in clear after +OK would be read as if secure."""
    conn = greeted()
    conn.send(Stls())
    conn.receive_data(b"+OK Begin TLS\r\n+OK injected maildrop\r\n")
    with pytest.raises(RemoteProtocolError, match="STLS"):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.start_tls_done()


def test_stls_injection_before_the_handshake_is_detected() -> None:
    conn = greeted()
    conn.send(Stls())
    assert feed(conn, b"+OK Begin TLS\r\n") == [StlsAccepted("Begin TLS")]
    conn.receive_data(b"+OK")
    with pytest.raises(RemoteProtocolError, match="STLS"):
        conn.start_tls_done()
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_require_tls_refuses_a_login_in_clear() -> None:
    conn = greeted(config=POP3ClientConfig(require_tls=True))
    for command in (UserPass("mrose", "tanstaaf"), Apop("mrose", "x"), Auth("PLAIN", "a", "b")):
        assert conn.send(command) == b""  # nothing written: no name, no secret
        (event,) = pump(conn)
        assert isinstance(event, LoginFailed) and event.tls_required
        assert "no STLS" in event.text
        assert conn.state is S.AUTHORIZATION and conn.outstanding == 0
    assert conn.data_to_send() == b""


def test_require_tls_refusal_comes_in_turn_after_pipelined_answers() -> None:
    conn = pipelining(greeted(config=POP3ClientConfig(require_tls=True)))
    conn.send(Capa())
    conn.send(UserPass("mrose", "tanstaaf"))
    events = feed(conn, b"+OK\r\nSTLS\r\n.\r\n")
    assert isinstance(events[0], CapabilitiesReceived)
    assert isinstance(events[1], LoginFailed) and events[1].tls_required
    assert len(events) == 2 and conn.outstanding == 0


def test_require_tls_logs_in_after_stls() -> None:
    conn = greeted(config=POP3ClientConfig(require_tls=True))
    conn.send(Stls())
    feed(conn, b"+OK\r\n")
    conn.start_tls_done()
    assert conn.send(UserPass("mrose", "tanstaaf")) == b"USER mrose\r\n"


def test_require_tls_with_implicit_tls() -> None:
    conn = greeted(config=POP3ClientConfig(require_tls=True, tls_active=True))
    assert conn.send(Apop("mrose", "tanstaaf")).startswith(b"APOP mrose ")


# --- logins ------------------------------------------------------------------------------


def test_apop_digest_is_the_rfc_1939_example() -> None:
    conn = greeted()
    assert conn.send(Apop("mrose", "tanstaaf")) == (
        b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
    )
    assert feed(conn, b"+OK maildrop has 1 message (369 octets)\r\n") == [
        LoggedIn("APOP", "maildrop has 1 message (369 octets)")
    ]


def test_apop_needs_a_timestamp() -> None:
    conn = greeted(b"+OK ready\r\n")
    with pytest.raises(LocalProtocolError, match="timestamp"):
        conn.send(Apop("mrose", "tanstaaf"))
    assert conn.outstanding == 0 and conn.state is S.AUTHORIZATION


@pytest.mark.parametrize("code", ["AUTH", "SYS/TEMP", "IN-USE", "LOGIN-DELAY", "SYS/PERM"])
def test_login_failure_carries_the_response_code(code: str) -> None:
    conn = greeted()
    conn.send(UserPass("mrose", "tanstaaf"))
    feed(conn, b"+OK\r\n")
    conn.data_to_send()
    assert feed(conn, f"-ERR [{code}] not now\r\n".encode()) == [
        LoginFailed("USER", "not now", code)
    ]
    assert conn.state is S.AUTHORIZATION


def test_user_refused_never_sends_the_password() -> None:
    conn = greeted()
    conn.send(UserPass("nobody", "secret"))
    assert feed(conn, b"-ERR [AUTH] who?\r\n") == [LoginFailed("USER", "who?", "AUTH")]
    assert conn.data_to_send() == b""


def test_a_malformed_response_code_stays_in_the_text() -> None:
    conn = greeted()
    conn.send(Apop("mrose", "x"))
    assert feed(conn, b"-ERR [no way] sorry\r\n") == [LoginFailed("APOP", "[no way] sorry", None)]


def test_auth_plain_sends_the_initial_response() -> None:
    conn = greeted()
    initial = base64.b64encode(b"\0mrose\0tanstaaf")
    assert conn.send(Auth("plain", "mrose", "tanstaaf")) == b"AUTH PLAIN " + initial + b"\r\n"
    assert feed(conn, b"+OK welcome\r\n") == [LoggedIn("PLAIN", "welcome")]


def test_auth_login_answers_each_challenge() -> None:
    conn = greeted()
    assert conn.send(Auth("LOGIN", "mrose", "tanstaaf")) == b"AUTH LOGIN\r\n"
    assert feed(conn, b"+ VXNlcm5hbWU6\r\n") == []
    assert conn.data_to_send() == base64.b64encode(b"mrose") + b"\r\n"
    assert feed(conn, b"+ UGFzc3dvcmQ6\r\n") == []
    assert conn.data_to_send() == base64.b64encode(b"tanstaaf") + b"\r\n"
    assert feed(conn, b"-ERR [AUTH] bad password\r\n") == [
        LoginFailed("LOGIN", "bad password", "AUTH")
    ]


def test_auth_cram_md5_is_the_rfc_2195_example() -> None:
    conn = greeted()
    assert conn.send(Auth("CRAM-MD5", "tim", "tanstaaftanstaaf")) == b"AUTH CRAM-MD5\r\n"
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    feed(conn, b"+ " + base64.b64encode(challenge) + b"\r\n")
    response = base64.b64decode(conn.data_to_send().strip())
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"
    expected = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest()
    assert response.endswith(expected.encode())


def test_auth_unknown_mechanism_is_the_applications_error() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.send(Auth("NO-SUCH-MECH", "mrose", "x"))
    assert conn.outstanding == 0 and conn.state is S.AUTHORIZATION


def test_auth_bad_challenge_is_cancelled() -> None:
    conn = greeted()
    conn.send(Auth("LOGIN", "mrose", "tanstaaf"))
    assert feed(conn, b"+ not base64!\r\n") == []
    assert conn.data_to_send() == b"*\r\n"  # RFC 5034 section 4: cancel
    assert feed(conn, b"-ERR [AUTH] cancelled\r\n") == [LoginFailed("LOGIN", "cancelled", "AUTH")]


def test_auth_endless_challenges_are_cancelled() -> None:
    conn = greeted(config=POP3ClientConfig(max_sasl_steps=3))
    conn.send(Auth("CRAM-MD5", "mrose", "x"))
    sent = []
    for _ in range(4):
        feed(conn, b"+ PDE+\r\n")
        sent.append(conn.data_to_send())
    assert sent[-1] == b"*\r\n" and b"*\r\n" not in sent[:-1]


def test_auth_long_initial_response_waits_for_the_empty_challenge() -> None:
    """RFC 5034 section 4: an initial response that overflows 255 octets is not inlined."""
    conn = greeted()
    password = "p" * 240
    assert conn.send(Auth("PLAIN", "mrose", password)) == b"AUTH PLAIN\r\n"
    feed(conn, b"+ \r\n")
    sent = conn.data_to_send()
    assert base64.b64decode(sent.strip()) == b"\0mrose\0" + password.encode()
    assert feed(conn, b"+OK\r\n") == [LoggedIn("PLAIN", "")]


def test_secrets_stay_out_of_reprs_and_lines() -> None:
    for command in (
        UserPass("mrose", "s3cret"),
        Apop("mrose", "s3cret"),
        Auth("PLAIN", "m", "s3cret"),
    ):
        assert "s3cret" not in repr(command)
    with pytest.raises(LocalProtocolError):
        UserPass("mrose\r\nDELE 1", "x")
    with pytest.raises(LocalProtocolError):
        UserPass("mrose", "x\r\nDELE 1")
    with pytest.raises(LocalProtocolError):
        Apop("two words", "x")
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="255"):
        conn.send(UserPass("mrose", "x" * 300))
    assert conn.outstanding == 0


# --- TRANSACTION -------------------------------------------------------------------------


def test_stat_list_uidl_transcript() -> None:
    """RFC 1939 section 5 and 7 examples."""
    conn = logged_in(pipeline=True)
    for command in (Stat(), List(), List(2), Uidl(), Uidl(2)):
        conn.send(command)
    events = feed(
        conn,
        b"+OK 2 320\r\n"
        b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200 extra info\r\n.\r\n"
        b"+OK 2 200\r\n"
        b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"
        b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n",
    )
    assert events == [
        StatReply(2, 320),
        ListReply(List(), (ScanEntry(1, 120), ScanEntry(2, 200))),
        ListReply(List(2), (ScanEntry(2, 200),)),
        UidlReply(
            Uidl(), (UidEntry(1, "whqtswO00WBw418f9t5JxYwZ"), UidEntry(2, "QhdPYR:00WBw1Ph7x7"))
        ),
        UidlReply(Uidl(2), (UidEntry(2, "QhdPYR:00WBw1Ph7x7"),)),
    ]


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (Stat(), b"+OK two messages\r\n"),
        (List(1), b"+OK 1\r\n"),
        (List(), b"+OK\r\n1 12\r\nbanana 3\r\n.\r\n"),
        (List(), b"+OK\r\n0 12\r\n.\r\n"),
        (Uidl(), b"+OK\r\n1 " + b"u" * 71 + b"\r\n.\r\n"),
        (Uidl(), b"+OK\r\n1 has space\r\n.\r\n"),
        (Uidl(), b"+OK\r\n1 tab\there\r\n.\r\n"),
        (Uidl(), b"+OK\r\n1 caf\xc3\xa9\r\n.\r\n"),
        (Uidl(), b"+OK\r\n1\r\n.\r\n"),
        (Uidl(1), b"+OK 1 \x7f\r\n"),
        (Noop(), b"* OK IMAP4rev1\r\n"),
    ],
)
def test_malformed_answers_are_the_servers_error(command: POP3Command, answer: bytes) -> None:
    conn = logged_in()
    conn.send(command)
    conn.receive_data(answer)
    with pytest.raises(RemoteProtocolError):
        pump(conn)


def test_a_uid_of_70_characters_is_valid() -> None:
    conn = logged_in()
    conn.send(Uidl())
    uid = "~" * 70
    assert feed(conn, f"+OK\r\n1 {uid}\r\n.\r\n".encode()) == [
        UidlReply(Uidl(), (UidEntry(1, uid),))
    ]


def test_long_listing_is_bounded_and_truncated() -> None:
    conn = logged_in(config=POP3ClientConfig(max_listing_entries=10))
    conn.send(Uidl())
    conn.receive_data(b"+OK\r\n")
    events: list[POP3ClientEvent] = []
    for i in range(1, 5001):
        events += feed(conn, b"%d uid-%d\r\n" % (i, i))
        assert conn.buffered == 0
    events += feed(conn, b".\r\n")
    (event,) = events
    assert isinstance(event, UidlReply) and event.truncated
    assert [e.msgno for e in event.entries] == list(range(1, 11))


def test_retr_streams_the_unstuffed_body() -> None:
    conn = logged_in()
    conn.send(Retr(1))
    wire = b"+OK 120 octets\r\nSubject: x\r\n\r\n..dot\r\n...\r\n.\r\n"
    events: list[POP3ClientEvent] = []
    for i in range(len(wire)):  # the worst chunking: one byte at a time
        events += feed(conn, wire[i : i + 1])
        if events:  # streaming: at most 2 bytes are held, inside the decoder
            assert conn.buffered == 0
    assert events[0] == MessageBegins(Retr(1), "120 octets")
    assert events[-1] == MessageComplete(Retr(1))
    body = b"".join(e.data for e in events if isinstance(e, MessageData))
    assert body == b"Subject: x\r\n\r\n.dot\r\n..\r\n"
    assert conn.outstanding == 0


def test_retr_of_an_empty_message_and_top() -> None:
    conn = logged_in(pipeline=True)
    assert conn.send(Top(1, 0)) == b"TOP 1 0\r\n"
    conn.send(Retr(2))
    assert feed(conn, b"+OK\r\nH: v\r\n\r\n.\r\n+OK 0 octets\r\n.\r\n") == [
        MessageBegins(Top(1, 0), ""),
        MessageData(b"H: v\r\n\r\n"),
        MessageComplete(Top(1, 0)),
        MessageBegins(Retr(2), "0 octets"),
        MessageComplete(Retr(2)),
    ]


def test_a_big_body_never_sits_in_memory() -> None:
    conn = logged_in()
    conn.send(Retr(1))
    conn.receive_data(b"+OK\r\n")
    line = b"x" * 1000 + b"\r\n"  # lines far beyond any line limit are fine in a body
    total = 0
    for _ in range(2000):
        for event in feed(conn, line * 8):
            if isinstance(event, MessageData):
                total += len(event.data)
        assert conn.buffered == 0
    events = feed(conn, b".\r\n")
    # The last CRLF was held back: it might have begun the terminator.
    assert events == [MessageData(b"\r\n"), MessageComplete(Retr(1))]
    assert total + 2 == len(line) * 8 * 2000


def test_retr_refused_and_dele_rset_noop() -> None:
    conn = logged_in(pipeline=True)
    for command in (Retr(9), Dele(1), Rset(), Noop()):
        conn.send(command)
    assert feed(conn, b"-ERR no such message\r\n+OK 1 deleted\r\n+OK\r\n+OK\r\n") == [
        CommandFailed(Retr(9), "no such message", None),
        CommandOK(Dele(1), "1 deleted"),
        CommandOK(Rset(), ""),
        CommandOK(Noop(), ""),
    ]


def test_server_closing_mid_body_is_an_unexpected_close() -> None:
    conn = logged_in()
    conn.send(Retr(1))
    events = feed(conn, b"+OK\r\nhalf a mess")
    assert events == [MessageBegins(Retr(1), ""), MessageData(b"half a mess")]
    assert feed(conn, b"") == [ConnectionClosed(expected=False, outstanding=1)]
    assert conn.state is S.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


def test_unsolicited_data_is_the_servers_error() -> None:
    conn = logged_in()
    conn.receive_data(b"+OK surprise\r\n")
    with pytest.raises(RemoteProtocolError, match="nobody asked"):
        conn.next_event()


# --- QUIT (RFC 1939 sections 4 and 6) ---------------------------------------------------


def test_quit_in_authorization() -> None:
    conn = greeted()
    assert conn.send(Quit()) == b"QUIT\r\n"
    assert feed(conn, b"+OK dewey POP3 server signing off\r\n") == [
        SignedOff(ok=True, updated=False, text="dewey POP3 server signing off", code=None),
        ConnectionClosed(expected=True),
    ]
    conn.receive_data(b"ignored after the end")
    assert conn.next_event() == ConnectionClosed(expected=True)


def test_quit_in_transaction_reports_the_update() -> None:
    conn = logged_in()
    conn.send(Quit())
    assert feed(conn, b"-ERR [SYS/TEMP] some deleted messages not removed\r\n")[0] == SignedOff(
        ok=False, updated=True, text="some deleted messages not removed", code="SYS/TEMP"
    )


# --- the application's values -----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_line": 511},
        {"max_sasl_line": 600, "max_line": 700},
        {"max_listing_entries": 0},
        {"max_capabilities": 0},
        {"max_sasl_steps": 0},
    ],
)
def test_bad_configuration_is_refused(overrides: dict[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        POP3ClientConfig(**overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Retr(0),
        lambda: Dele(-1),
        lambda: List(0),
        lambda: Uidl(0),
        lambda: Top(1, -1),
        lambda: Auth("BAD MECH", "u", "p"),
        lambda: Auth("PLAIN", "", "p"),
        lambda: Auth("PLAIN", "u", "p", authzid="a\r\nb"),
        lambda: UserPass("", "p"),
        lambda: Apop("u", ""),
    ],
)
def test_malformed_commands_are_refused(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


def test_public_names_are_documented_and_share_the_markers() -> None:
    assert pop3_client_events.NEED_DATA is nosend_proto.NEED_DATA
    for module in (pop3_client, pop3_client_events):
        assert module.__doc__
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"
