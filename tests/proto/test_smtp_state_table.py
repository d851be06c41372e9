"""The SMTP server engine against its state table (``nosend_proto._smtp_machine``).

Every (state, command verb) pair, every (state, owed reply, outcome) entry of ``REPLIES``
and every entry of ``INPUTS`` is driven through a real connection, and the engine must do
what the table says. The recipes below reach each (state, owed reply) pair; a test checks
that they cover the table exactly, so a row added without a way to reach it fails here.
Since the engine takes its moves from the table, each move is also checked against what
the engine remembers (``check_state_facts``): a wrong entry leaves the two disagreeing.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable

import pytest

from nosend_proto import LocalProtocolError
from nosend_proto._smtp_machine import (
    INPUTS,
    PIPELINE_STATES,
    REFUSED_SERVES,
    REPLIES,
    RESUME,
    SEQUENCE,
    Input,
    Owed,
    OwedReply,
)
from nosend_proto.smtp_events import (
    NEED_DATA,
    AuthAttempt,
    AuthChallenge,
    Bdat,
    BdatChunkEnd,
    DataChunk,
    DataStart,
    Hello,
    Help,
    MailFrom,
    Noop,
    ProtocolViolation,
    Quit,
    RcptTo,
    Reply,
    Reset,
    SMTPEvent,
    StartTLS,
    Verify,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, check_state_facts

S = SMTPState
PLAIN = base64.b64encode(b"\0user\0secret").decode()


def make(max_errors: int = 10) -> ServerConnection:
    config = SMTPServerConfig(
        hostname=HOST,
        tls_available=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_requires_tls=False,
        max_errors=max_errors,
    )
    return ServerConnection(config, nonce="n1")


def events(conn: ServerConnection, data: bytes) -> list[SMTPEvent]:
    """Feed ``data``; return the events up to the first that owes a reply (or NEED_DATA)."""
    conn.receive_data(data)
    got: list[SMTPEvent] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return got
        assert not isinstance(event, type(NEED_DATA))
        got.append(event)
        if not isinstance(event, DataChunk | Bdat):
            return got


def answer(conn: ServerConnection, data: bytes) -> None:
    """Feed ``data`` and answer the event it brings positively."""
    last = events(conn, data)[-1]
    conn.send(conn.default_reply(last))


# How to reach each state with no reply owed.
def reach(state: SMTPState, max_errors: int = 10) -> ServerConnection:
    conn = make(max_errors)
    if state is S.GREETING:
        return conn
    if state is S.REFUSED:
        conn.send(Reply(554, "no"))
        return conn
    conn.send(Reply(220, HOST))
    steps = {
        S.CONNECTED: [],
        S.READY: [b"EHLO c\r\n"],
        S.MAIL: [b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n"],
        S.RCPT: [b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"],
        S.DATA: [
            b"EHLO c\r\n",
            b"MAIL FROM:<a@b.example>\r\n",
            b"RCPT TO:<c@d.example>\r\n",
            b"DATA\r\n",
        ],
        S.AUTH: [b"EHLO c\r\n", b"AUTH LOGIN\r\n"],
        S.TLS_PENDING: [b"EHLO c\r\n", b"STARTTLS\r\n"],
    }[state]
    for line in steps:
        answer(conn, line)
    assert conn.state is state
    return conn


# What brings each owed reply in a state reached by ``reach``: bytes to feed (the last
# event they bring owes the reply), or None for the greeting.
TRIGGERS: dict[tuple[SMTPState, OwedReply], bytes | None] = {
    (S.GREETING, Owed.GREETING): None,
    (S.DATA, Owed.END_DATA): b"body\r\n.\r\n",
    (S.RCPT, Owed.END_DATA): b"BDAT 3 LAST\r\nabc",
    (S.DATA, Owed.REJECTED): b"bare\nLF\r\n.\r\n",
    (S.RCPT, Owed.REJECTED): b"BDAT 3 LAST\r\na\nb",
    (S.RCPT, Owed.BDAT_CHUNK): b"BDAT 3\r\nabc",
    (S.READY, Owed.MAIL): b"MAIL FROM:<a@b.example>\r\n",
    (S.RCPT, Owed.DATA): b"DATA\r\n",
    (S.READY, Owed.AUTH_CHALLENGE): b"AUTH LOGIN\r\n",
    (S.AUTH, Owed.AUTH_CHALLENGE): base64.b64encode(b"user") + b"\r\n",
    (S.READY, Owed.AUTH_ATTEMPT): f"AUTH PLAIN {PLAIN}\r\n".encode(),
}
for _state in (S.CONNECTED, S.READY, S.MAIL, S.RCPT):
    TRIGGERS[_state, Owed.HELLO] = b"EHLO c\r\n"
    TRIGGERS[_state, Owed.HELLO_VIOLATION] = b"EHLO\r\n"
    TRIGGERS[_state, Owed.RSET] = b"RSET\r\n"
    TRIGGERS[_state, Owed.NOOP] = b"NOOP\r\n"
    TRIGGERS[_state, Owed.VRFY] = b"VRFY x\r\n"
    TRIGGERS[_state, Owed.HELP] = b"HELP\r\n"
for _state in (S.MAIL, S.RCPT):
    TRIGGERS[_state, Owed.RCPT] = b"RCPT TO:<e@f.example>\r\n"
for _state in (S.CONNECTED, S.READY):
    TRIGGERS[_state, Owed.STARTTLS] = b"STARTTLS\r\n"
for _state in (S.REFUSED, S.CONNECTED, S.READY, S.MAIL, S.RCPT):
    TRIGGERS[_state, Owed.QUIT] = b"QUIT\r\n"
    TRIGGERS[_state, Owed.VIOLATION] = b"FROB\r\n"
    TRIGGERS[_state, Owed.FATAL] = b"FROB\r\n"  # with max_errors=1


def owing(state: SMTPState, owed: OwedReply) -> tuple[ServerConnection, SMTPEvent | None]:
    """A connection in ``state`` owing ``owed``, and the event that asked for it."""
    conn = reach(state, max_errors=1 if owed is Owed.FATAL else 10)
    trigger = TRIGGERS[state, owed]
    event = None if trigger is None else events(conn, trigger)[-1]
    assert conn.state is state
    assert (conn._owed or Owed.GREETING) is owed  # the greeting is owed implicitly
    return conn, event


def reply_for(owed: OwedReply, event: SMTPEvent | None, positive: bool) -> Reply:
    if positive:
        if isinstance(event, AuthChallenge):
            return event.reply
        return Reply(min(owed.positive), "yes")
    if owed is Owed.GREETING:
        return Reply(554, "no")
    if isinstance(event, ProtocolViolation):
        return event.reply  # a 421 when it closes
    return Reply(550, "no")


def test_the_triggers_reach_exactly_the_pairs_of_the_table() -> None:
    assert set(TRIGGERS) == {(state, owed) for state, owed, _ in REPLIES}


def test_each_owed_reply_has_the_outcomes_its_codes_allow() -> None:
    for state, owed in TRIGGERS:
        assert ((state, owed, True) in REPLIES) == bool(owed.positive)
        # Only QUIT cannot be refused (221, or the 421 that closes anything).
        assert ((state, owed, False) in REPLIES) == (owed is not Owed.QUIT)


@pytest.mark.parametrize(
    ("state", "owed", "positive"),
    sorted(REPLIES, key=lambda key: (key[0].value, key[1].value, key[2])),
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_a_reply_makes_the_move_of_the_table(
    state: SMTPState, owed: OwedReply, positive: bool
) -> None:
    conn, event = owing(state, owed)
    check_state_facts(conn)
    conn.send(reply_for(owed, event, positive))
    assert conn.state is REPLIES[state, owed, positive]
    check_state_facts(conn)


@pytest.mark.parametrize(
    ("state", "owed"), sorted(TRIGGERS, key=lambda key: (key[0].value, key[1].value))
)
def test_an_outcome_missing_from_the_table_is_the_applications_error(
    state: SMTPState, owed: OwedReply
) -> None:
    conn, event = owing(state, owed)
    for positive in (True, False):
        if (state, owed, positive) in REPLIES:
            continue
        code = 250 if positive else 550
        with pytest.raises(LocalProtocolError):
            conn.send(Reply(code, "x"))
        assert conn.state is state


def test_a_421_closes_whatever_is_owed() -> None:
    for state, owed in TRIGGERS:
        conn, _ = owing(state, owed)
        conn.send(Reply(421, "bye"))
        assert conn.state is S.CLOSED


# -- commands ---------------------------------------------------------------------------

COMMAND_LINES: dict[str, tuple[bytes, type]] = {
    "HELO": (b"HELO c\r\n", Hello),
    "EHLO": (b"EHLO c\r\n", Hello),
    "MAIL": (b"MAIL FROM:<a@b.example>\r\n", MailFrom),
    "RCPT": (b"RCPT TO:<c@d.example>\r\n", RcptTo),
    "DATA": (b"DATA\r\n", DataStart),
    "BDAT": (b"BDAT 3\r\nabc", Bdat),
    "RSET": (b"RSET\r\n", Reset),
    "NOOP": (b"NOOP\r\n", Noop),
    "VRFY": (b"VRFY x\r\n", Verify),
    "HELP": (b"HELP\r\n", Help),
    "QUIT": (b"QUIT\r\n", Quit),
    "STARTTLS": (b"STARTTLS\r\n", StartTLS),
    "AUTH": (b"AUTH PLAIN\r\n", AuthChallenge),
}


def test_every_verb_of_the_table_has_a_line() -> None:
    assert set(COMMAND_LINES) == set(SEQUENCE)


@pytest.mark.parametrize("verb", sorted(SEQUENCE))
@pytest.mark.parametrize("state", sorted(PIPELINE_STATES, key=lambda s: s.value))
def test_a_command_is_served_or_refused_as_the_table_says(state: SMTPState, verb: str) -> None:
    conn = reach(state)
    line, kind = COMMAND_LINES[verb]
    got = events(conn, line)
    if state is S.REFUSED and verb not in REFUSED_SERVES:
        assert len(got) == 1 and isinstance(got[0], ProtocolViolation)
        assert got[0].reply.code == 503
        assert got[0].reply.text == "No service here, send QUIT"
    elif state in SEQUENCE[verb]:
        if verb == "BDAT":  # RFC 3030 section 2: the octets are read, then refused
            assert got[0] == Bdat(3, False, accepted=False)
            got = got[1:]
        assert len(got) == 1 and isinstance(got[0], ProtocolViolation)
        expected = (503, SEQUENCE[verb][state])
        if verb == "BDAT" and state is S.CONNECTED:
            expected = (502, "BDAT not offered")  # nothing is offered before EHLO
        assert (got[0].reply.code, got[0].reply.text) == expected
        conn.send(got[0])
        assert conn.state is state
        check_state_facts(conn)
    else:
        assert isinstance(got[0], kind)
        if verb == "BDAT":
            assert got[0] == Bdat(3, False) and got[1:] == [DataChunk(b"abc"), BdatChunkEnd(3)]


# -- moves on input ---------------------------------------------------------------------

INPUT_CASES: dict[tuple[SMTPState, Input], Callable[[ServerConnection], object]] = {
    (S.BDAT, Input.CHUNK_ACCEPTED): lambda c: events(c, b"abc"),
    (S.BDAT, Input.CHUNK_REFUSED): lambda c: events(c, b"abc"),
    (S.READY, Input.SASL_ENDED): lambda c: events(c, f"AUTH PLAIN {PLAIN}\r\n".encode()),
    (S.AUTH, Input.SASL_ENDED): lambda c: events(c, b"*\r\n"),
    (S.TLS_PENDING, Input.TLS_DONE): lambda c: c.start_tls_done(),
}


def test_every_input_move_has_a_case() -> None:
    moves = {key for key in INPUTS if key[1] is not Input.BDAT_COMMAND}
    assert set(INPUT_CASES) == moves


@pytest.mark.parametrize("state", [S.CONNECTED, S.READY, S.MAIL, S.RCPT])
def test_a_bdat_command_moves_as_the_table_says(state: SMTPState) -> None:
    conn = reach(state)
    assert events(conn, b"BDAT 3\r\n")[0] == Bdat(3, False, accepted=state is S.RCPT)
    assert conn.state is INPUTS[state, Input.BDAT_COMMAND]
    events(conn, b"abc")
    moved = INPUTS[S.BDAT, Input.CHUNK_ACCEPTED if state is S.RCPT else Input.CHUNK_REFUSED]
    assert conn.state is (state if moved is RESUME else moved)
    check_state_facts(conn)


@pytest.mark.parametrize(("state", "what"), sorted(INPUT_CASES, key=lambda k: k[1].name))
def test_input_makes_the_move_of_the_table(state: SMTPState, what: Input) -> None:
    if state is S.BDAT:
        conn = reach(S.RCPT if what is Input.CHUNK_ACCEPTED else S.MAIL)
        events(conn, b"BDAT 3\r\n")
        before = S.RCPT if what is Input.CHUNK_ACCEPTED else S.MAIL
    else:
        conn = reach(state)
        before = state
    assert conn.state is state
    INPUT_CASES[state, what](conn)
    target = INPUTS[state, what]
    assert conn.state is (before if target is RESUME else target)
    check_state_facts(conn)


def test_events_after_an_auth_line_owe_what_the_table_expects() -> None:
    # The AuthAttempt of the SASL_ENDED move is owed in READY, as REPLIES has it.
    conn = reach(S.READY)
    got = events(conn, f"AUTH PLAIN {PLAIN}\r\n".encode())
    assert isinstance(got[-1], AuthAttempt) and conn._owed is Owed.AUTH_ATTEMPT
    assert (S.READY, Owed.AUTH_ATTEMPT, True) in REPLIES


def test_states_work_as_keys_and_survive_pickling() -> None:
    table = {state: state.value for state in SMTPState}
    assert all(table[state] == state.value for state in SMTPState)
    assert SMTPState.READY in frozenset({SMTPState.READY})
    assert SMTPState("ready") is SMTPState.READY
    assert pickle.loads(pickle.dumps(SMTPState.DATA)) is SMTPState.DATA
