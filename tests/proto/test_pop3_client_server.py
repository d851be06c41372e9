"""The POP3 client engine against our POP3 server engine, in memory.

Both engines run back to back (``pop3_client_driver.Link``); the server answers from
the fake maildrop of ``test_pop3_support``. These tests count round trips, check message
bodies byte for byte, and log in every way both engines know.
"""

from __future__ import annotations

import pytest

from nosend_proto.pop3_client_events import (
    Apop,
    Auth,
    Capa,
    CapabilitiesReceived,
    CommandFailed,
    ConnectionClosed,
    Dele,
    Greeting,
    List,
    ListReply,
    LoggedIn,
    LoginFailed,
    POP3ClientConfig,
    Quit,
    Retr,
    Rset,
    SignedOff,
    Stat,
    StatReply,
    Stls,
    StlsAccepted,
    Top,
    Uidl,
    UidlReply,
    UserPass,
)
from nosend_proto.pop3_events import AuthAttempt
from nosend_proto.pop3_state import wire_size
from tests.proto.pop3_client_driver import Link, bodies
from tests.proto.test_pop3_support import (
    MESSAGES,
    PASSWORD,
    USER,
    config,
    normalise,
    reference_encode,
)

# Bodies rich in what POP3 transfer encoding touches: dots at line starts, a lone dot,
# CRLF and LF line ends, a missing final newline, CRs inside lines.
TRICKY = [
    b".\n..\n...\n.x\nx.\n",
    b"From: a\r\n\r\n.\r\n.\r\n\r\n.\r\n",
    b"no final newline, ends in a dot.",
    b"CR\rinside\r\n.\rdot-CR\n",
    b"",
    b"\n\n\n",
]


def fetch_all(link: Link, count: int, *, pipeline: bool) -> list[bytes]:
    """The fetcher's job: UIDL, every RETR, then every DELE and QUIT."""
    send = link.exchange if pipeline else link.one_by_one
    (listing,) = link.exchange(Uidl())
    assert isinstance(listing, UidlReply) and len(listing.entries) == count
    got = bodies(send(*(Retr(e.msgno) for e in listing.entries)))
    events = send(*(Dele(e.msgno) for e in listing.entries), Quit())
    assert events[-2:] == [
        SignedOff(ok=True, updated=True, text=events[-2].text, code=None),  # type: ignore[union-attr]
        ConnectionClosed(expected=True),
    ]
    return got


def login(link: Link) -> None:
    (caps,) = link.exchange(Capa())
    assert isinstance(caps, CapabilitiesReceived)
    assert link.exchange(UserPass(USER, PASSWORD)) == [
        LoggedIn("USER", link.events[-1].text)  # type: ignore[union-attr]
    ]


@pytest.mark.parametrize("count", [1, 3, 25])
def test_pipelined_fetch_costs_a_constant_number_of_round_trips(count: int) -> None:
    messages = [b"Subject: %d\n\nbody %d\n.dot\n" % (i, i) for i in range(count)]
    link = Link.open(messages=messages)
    login(link)
    assert link.client.pipelining
    before = link.round_trips
    assert fetch_all(link, count, pipeline=True) == [normalise(m) for m in messages]
    # UIDL, all RETRs in one write, all DELEs and QUIT in one write: three, whatever N.
    assert link.round_trips - before == 3
    assert link.round_trips == 6  # CAPA, USER, PASS before
    assert link.server.applied is not None and len(link.server.applied) == count


@pytest.mark.parametrize("count", [1, 3, 25])
def test_without_pipelining_each_command_is_a_round_trip(count: int) -> None:
    messages = [b"Subject: %d\n\nbody\n" % i for i in range(count)]
    link = Link.open(messages=messages)
    # No CAPA: the client knows nothing of PIPELINING and must not pipeline.
    assert link.exchange(UserPass(USER, PASSWORD))[0].method == "USER"  # type: ignore[union-attr]
    assert not link.client.pipelining
    before = link.round_trips
    assert fetch_all(link, count, pipeline=False) == [normalise(m) for m in messages]
    assert link.round_trips - before == 1 + 2 * count + 1


def test_bodies_round_trip_byte_exact() -> None:
    link = Link.open(messages=TRICKY, chunk_size=3)
    login(link)
    got = bodies(link.exchange(*(Retr(i + 1) for i in range(len(TRICKY)))))
    assert got == [normalise(m) for m in TRICKY]
    # What came off the wire is exactly what the server engine encoded.
    assert b"".join(link.wire_to_client).count(reference_encode(TRICKY[0])) == 1
    (listing,) = link.exchange(List())
    assert isinstance(listing, ListReply)
    assert [e.octets for e in listing.entries] == [len(b) for b in got]
    assert [e.octets for e in listing.entries] == [wire_size(m) for m in TRICKY]


def test_stat_rset_top_and_errors() -> None:
    link = Link.open(unavailable={2})
    login(link)
    assert link.exchange(Stat()) == [StatReply(3, sum(wire_size(m) for m in MESSAGES))]
    top = bodies(link.exchange(Top(1, 1)))
    assert top == [b"From: a@example\r\nSubject: one\r\n\r\nhello\r\n"]
    link.exchange(Dele(1), Rset())
    events = link.exchange(Retr(2), Retr(9), Dele(1), Dele(1))
    assert [type(e) for e in events] == [
        CommandFailed,
        CommandFailed,
        type(events[2]),
        CommandFailed,
    ]
    assert events[0] == CommandFailed(Retr(2), "message cannot be read", "SYS/TEMP")
    assert events[3].text == "message 1 already deleted"  # type: ignore[union-attr]


def test_every_login_method_against_the_server_engine() -> None:
    for command in (
        UserPass(USER, PASSWORD),
        Apop(USER, PASSWORD),
        Auth("PLAIN", USER, PASSWORD),
        Auth("LOGIN", USER, PASSWORD),
        Auth("CRAM-MD5", USER, PASSWORD),
    ):
        link = Link.open()
        (event,) = link.exchange(command)
        assert isinstance(event, LoggedIn), (command, event)
        (attempt,) = link.server.events
        assert isinstance(attempt, AuthAttempt)
        assert attempt.credentials.username == USER
        link.exchange(Quit())
        assert link.server.applied == ()  # QUIT in TRANSACTION, nothing marked
    # AUTH LOGIN costs a round trip per step: AUTH, the name, the password.
    link = Link.open()
    link.exchange(Auth("LOGIN", USER, PASSWORD))
    assert link.round_trips == 3


@pytest.mark.parametrize(
    "command",
    [
        UserPass(USER, "wrong"),
        Apop(USER, "wrong"),
        Auth("PLAIN", USER, "wrong"),
        Auth("LOGIN", USER, "wrong"),
        Auth("CRAM-MD5", USER, "wrong"),
    ],
)
def test_wrong_secret_fails_with_the_auth_code(command: UserPass | Apop | Auth) -> None:
    link = Link.open()
    (event,) = link.exchange(command)
    assert isinstance(event, LoginFailed) and event.code == "AUTH"
    assert link.client.state.value == "AUTHORIZATION"


@pytest.mark.parametrize("code", ["IN-USE", "SYS/TEMP", "LOGIN-DELAY"])
def test_login_refused_for_other_reasons(code: str) -> None:
    link = Link.open(reject_code=code)
    (event,) = link.exchange(Auth("PLAIN", USER, "anything"))
    assert event == LoginFailed("PLAIN", "authentication failed", code)


def test_server_refusing_cleartext_before_tls() -> None:
    link = Link.open(server_config=config(auth_requires_tls=True, tls_available=True))
    (caps,) = link.exchange(Capa())
    assert isinstance(caps, CapabilitiesReceived)
    assert "PLAIN" not in caps.capabilities.sasl and caps.capabilities.stls
    (event,) = link.exchange(Auth("PLAIN", USER, PASSWORD))
    assert event == LoginFailed("PLAIN", "plaintext authentication disallowed without TLS", "AUTH")


def test_stls_then_login_with_require_tls() -> None:
    link = Link.open(
        client_config=POP3ClientConfig(require_tls=True),
        server_config=config(auth_requires_tls=True, tls_available=True),
    )
    (event,) = link.exchange(UserPass(USER, PASSWORD))
    assert isinstance(event, LoginFailed) and event.tls_required
    assert link.round_trips == 0 and link.wire_to_server == []  # no name, no password
    link.exchange(Capa())
    assert link.client.capabilities.stls
    assert link.exchange(Stls()) == [StlsAccepted("Begin TLS negotiation")]
    link.client.start_tls_done()  # the handshake would happen here
    (caps,) = link.exchange(Capa())
    assert isinstance(caps, CapabilitiesReceived)
    assert "PLAIN" in caps.capabilities.sasl and not caps.capabilities.stls
    (event,) = link.exchange(Auth("PLAIN", USER, PASSWORD))
    assert isinstance(event, LoggedIn)


def test_require_tls_against_a_server_without_stls() -> None:
    link = Link.open(client_config=POP3ClientConfig(require_tls=True))
    link.exchange(Capa())
    assert not link.client.capabilities.stls
    (event,) = link.exchange(Apop(USER, PASSWORD))
    assert isinstance(event, LoginFailed) and event.tls_required and "no STLS" in event.text
    assert link.server.events == []  # the server saw no login at all


def test_quit_whose_update_failed() -> None:
    link = Link.open(fail_update=True)
    login(link)
    link.exchange(Dele(1))
    events = link.exchange(Quit())
    assert events[0] == SignedOff(
        ok=False, updated=True, text="some deleted messages not removed", code="SYS/TEMP"
    )


def test_greeting_then_quit_before_login() -> None:
    link = Link.open()
    assert isinstance(link.events[0], Greeting) and link.events[0].timestamp
    (event, closed) = link.exchange(Quit())
    assert isinstance(event, SignedOff) and event.ok and not event.updated
    assert closed == ConnectionClosed(expected=True)
