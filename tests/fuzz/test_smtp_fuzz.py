"""Property tests of the SMTP server engine (hypothesis).

* arbitrary bytes in arbitrary chunkings: nothing escapes but the documented errors (here
  none at all, since the application below always answers correctly), buffers stay
  within the configured limits;
* any split of a valid session yields the same events;
* dot-stuffing round trip is byte-exact for any body;
* random sessions, answered at random (accept, refuse, 421), make exactly the moves of
  the transition table (``_smtp_machine.REPLIES``), the table has an entry for every
  (state, owed reply, outcome) they reach, and the state always agrees with what the
  engine remembers of the session (``check_state_facts``);
* a state machine checks command sequencing against a small reference model.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nosend_proto import _smtp_data
from nosend_proto._smtp_data import DotDecoder
from nosend_proto._smtp_machine import REPLIES, Owed
from nosend_proto.smtp_events import (
    NEED_DATA,
    AuthAttempt,
    Bdat,
    BdatChunkEnd,
    ConnectionClosed,
    DataChunk,
    EndOfData,
    ProtocolViolation,
    Reply,
    SMTPEvent,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.fuzz.profiles import fuzz_settings
from tests.proto.smtp_driver import check_state_facts

HOST = "mx.example.org"
FUZZ_CONFIG = SMTPServerConfig(
    hostname=HOST,
    max_message_size=3000,
    max_text_line=200,
    max_recipients=3,
    max_errors=50,
    auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
    auth_requires_tls=False,
    tls_available=True,
)

FAST = fuzz_settings(150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def answer(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    if isinstance(event, DataChunk | Bdat | ConnectionClosed):
        return None
    if isinstance(event, AuthAttempt):
        return Reply(535, "no")
    return conn.default_reply(event)


def run(conn: ServerConnection, chunks: list[bytes], close: bool = True) -> list[SMTPEvent]:
    """Feed ``chunks`` (then EOF), answer every event; check the bounds on the way."""
    events: list[SMTPEvent] = []
    max_chunk = max((len(c) for c in chunks), default=0)
    pending = [*chunks, b""] if close else list(chunks)
    while conn.state is not SMTPState.CLOSED:
        if conn.state is SMTPState.TLS_PENDING:
            conn.start_tls_done()
        event = conn.next_event()
        if event is NEED_DATA:
            if not pending:
                break
            conn.receive_data(pending.pop(0))
            continue
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
        reply = answer(conn, event)
        if reply is not None:
            conn.send(reply)
            assert conn.should_flush in (True, False)
        # Memory per connection stays bounded whatever the peer sends.
        # (the longest line, a chunk being searched, and one chunk not read yet).
        assert len(conn._buf) <= conn._buf.max_line + 2 * max_chunk
        assert len(conn._decoder._hold) <= 4  # the few bytes kept between DATA chunks
    return events


def greeted(config: SMTPServerConfig = FUZZ_CONFIG) -> ServerConnection:
    conn = ServerConnection(config, nonce="fuzz")
    conn.send(Reply(220, "hello"))
    return conn


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


TOKENS = st.sampled_from(
    [
        b"EHLO a.example\r\n", b"HELO a.example\r\n", b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n", b"RCPT TO:<c@d.example>\r\n",
        b"RCPT TO:<postmaster>\r\n", b"DATA\r\n", b"BDAT 5\r\n", b"BDAT 3 LAST\r\n",
        b"RSET\r\n", b"NOOP\r\n", b"VRFY x\r\n", b"HELP\r\n", b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n", b"AUTH LOGIN dGlt\r\n", b"AUTH CRAM-MD5\r\n", b"*\r\n",
        b".\r\n", b"..\r\n", b"\r\n", b"\n", b"\r", b".", b"x" * 250, b"QUIT\r\n",
        b"\r\n.\r\n", b"\xff\x00",
    ]
)  # fmt: skip


@FAST
@given(
    st.lists(st.one_of(TOKENS, st.binary(max_size=40)), max_size=40),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_arbitrary_input_never_crashes_and_stays_bounded(
    tokens: list[bytes], cuts: list[int]
) -> None:
    conn = greeted()
    data = b"".join(tokens)
    events = run(conn, chunked(data, cuts))
    # The peer closed at the end, so the engine always ends closed.
    assert conn.state is SMTPState.CLOSED
    # Never more content handed on for one message than the configured limit.
    content = 0
    for event in events:
        if isinstance(event, DataChunk):
            content += len(event.data)
            assert content <= FUZZ_CONFIG.max_message_size
        elif not isinstance(event, Bdat | BdatChunkEnd):
            content = 0


# The (state, owed reply, outcome) entries the random sessions reached, for a look at how
# much of the table they cover (python -m pytest ... -s with a print, when in doubt).
REACHED: set[tuple[SMTPState, Owed, bool]] = set()


_PLAIN = b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"
# Whole commands (and what follows them), so that random sessions get deep into the table.
_OPEN = b"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
STEPS = st.sampled_from(
    [
        _OPEN, _OPEN, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
        b"EHLO a.example\r\n", b"EHLO a.example\r\n", b"HELO a.example\r\n", b"EHLO\r\n",
        b"MAIL FROM:<a@b.example>\r\n", b"MAIL FROM:<a@b.example>\r\n",
        b"RCPT TO:<c@d.example>\r\n", b"RCPT TO:<c@d.example>\r\n", b"RCPT TO:<x>\r\n",
        b"DATA\r\nbody\r\n.\r\n", b"DATA\r\nbare\nLF\r\n.\r\n", b"BDAT 3\r\nabc",
        b"BDAT 3 LAST\r\nabc", b"BDAT 3 LAST\r\na\nb", b"BDAT 0 LAST\r\n", b"RSET\r\n",
        b"NOOP\r\n", b"VRFY x\r\n", b"HELP\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n", _PLAIN,
        b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n", b"AUTH LOGIN\r\n*\r\n", b"*\r\n",
        b"FROB\r\n", b"QUIT\r\n",
    ]
)  # fmt: skip


# The (state, owed reply, outcome) entries the random sessions reached, for a look at how
# much of the table they cover (run the test in a loop and print it, when in doubt).
REACHED: set[tuple[SMTPState, Owed, bool]] = set()


@FAST
@given(
    st.lists(STEPS, min_size=10, max_size=40),
    st.lists(st.integers(min_value=0), max_size=8),
    st.lists(st.sampled_from(["accept"] * 12 + ["refuse"] * 6 + ["421"]), max_size=20),
    st.sampled_from([0, 3, 50]),
)
def test_random_sessions_make_the_moves_of_the_table(
    tokens: list[bytes], cuts: list[int], choices: list[str], max_errors: int
) -> None:
    config = SMTPServerConfig(
        hostname=HOST,
        max_errors=max_errors,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_requires_tls=False,
        tls_available=True,
    )
    conn = ServerConnection(config, nonce="fuzz")
    picks = itertools.cycle(choices or ["accept"])
    reached: set[tuple[SMTPState, Owed, bool]] = set()

    def reply(event: SMTPEvent | None) -> None:
        owed = conn._owed or Owed.GREETING
        pick = next(picks)
        before = conn.state
        if pick == "421":
            conn.send(Reply(421, "bye"))
            assert conn.state is SMTPState.CLOSED
            return
        positive = bool(owed.positive) and (pick == "accept" or owed is Owed.QUIT)
        if event is None:  # the greeting
            answer_ = Reply(220, "hi") if positive else Reply(554, "no")
        elif positive:
            answer_ = conn.default_reply(event)
            if isinstance(event, AuthAttempt):
                answer_ = Reply(235, "ok")
        elif isinstance(event, ProtocolViolation):
            answer_ = event.reply
        else:
            answer_ = Reply(550, "no")
        assert (before, owed, positive) in REPLIES
        conn.send(answer_)
        reached.add((before, owed, positive))
        if answer_.code != 421:
            assert conn.state is REPLIES[before, owed, positive]
        check_state_facts(conn)

    reply(None)
    pending = [*chunked(b"".join(tokens), cuts), b""]
    while conn.state is not SMTPState.CLOSED:
        if conn.state is SMTPState.TLS_PENDING:
            conn.start_tls_done()
            assert conn.state is SMTPState.CONNECTED
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(pending.pop(0))
            continue
        assert not isinstance(event, type(NEED_DATA))
        check_state_facts(conn)
        if isinstance(event, DataChunk | Bdat):
            assert conn._owed is None
        elif not isinstance(event, ConnectionClosed):
            reply(event)
    REACHED.update(reached)


def merged(events: list[SMTPEvent]) -> list[object]:
    """Events with adjacent DataChunks joined (their boundaries follow the input's)."""
    out: list[object] = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], bytes):
            out[-1] += event.data
        else:
            out.append(event.data if isinstance(event, DataChunk) else event)
    return out


LINES = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=15,
)


@st.composite
def sessions(draw: st.DrawFn) -> bytes:
    parts = [b"EHLO client.example\r\n"]
    for _ in range(draw(st.integers(1, 3))):
        parts.append(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n")
        lines = draw(LINES)
        if draw(st.booleans()):
            body = b"".join(line + b"\r\n" for line in lines)
            parts.append(b"DATA\r\n" + (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:])
            parts.append(b".\r\n")
        else:
            body = b"".join(line + b"\r\n" for line in lines)
            half = len(body) // 2
            parts.append(b"BDAT %d\r\n" % half + body[:half])
            parts.append(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        parts.append(draw(st.sampled_from([b"", b"NOOP\r\n", b"RSET\r\n", b"VRFY bob\r\n"])))
    parts.append(b"QUIT\r\n")
    return b"".join(parts)


@FAST
@given(sessions(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_valid_session_yields_the_same_events(
    session: bytes, cuts: list[int]
) -> None:
    whole = run(greeted(), [session])
    split = run(greeted(), chunked(session, cuts))
    assert merged(whole) == merged(split)
    assert sum(isinstance(e, EndOfData) for e in whole) == session.count(b"MAIL FROM")


def stuff(body: bytes) -> bytes:
    """An independent DATA encoder: RFC 5321 section 4.5.2, written line by line."""
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    out = [b"." + line if line.startswith(b".") else line for line in lines[:-1]]
    return b"".join(line + b"\r\n" for line in out) + b".\r\n"


DOTTY = st.lists(st.sampled_from([b"\r\n", b".", b"..", b"\r", b"\n", b"a"]), max_size=80)


@FAST
@given(
    st.one_of(st.binary(max_size=300), DOTTY.map(b"".join)),
    st.lists(st.integers(min_value=0), max_size=20),
    st.sampled_from([_smtp_data._LOOP_BUDGET, 1, 2, 3]),
)
def test_dot_stuffing_round_trip_is_byte_exact_for_any_body(
    body: bytes, cuts: list[int], budget: int
) -> None:
    body = body + b"\r\n" if not body.endswith(b"\r\n") else body
    wire = stuff(body) + b"NEXT"
    saved, _smtp_data._LOOP_BUDGET = _smtp_data._LOOP_BUDGET, budget  # small: bulk path
    try:
        decoder = DotDecoder()
        out = b""
        end = -1
        consumed = 0
        for chunk in chunked(wire, cuts):
            content, end = decoder.feed(chunk)
            out += content
            if end >= 0:
                end += consumed
                break
            consumed += len(chunk)
    finally:
        _smtp_data._LOOP_BUDGET = saved
    assert out == body
    assert wire[end:] == b"NEXT"


@FAST
@given(LINES, st.lists(st.integers(min_value=0), max_size=20))
def test_engine_round_trip_for_crlf_bodies(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    session = (
        b"HELO a.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        + stuff(body)
        + b"QUIT\r\n"
    )
    events = run(greeted(SMTPServerConfig(hostname=HOST)), chunked(session, cuts))
    assert b"".join(e.data for e in events if isinstance(e, DataChunk)) == body
    assert any(isinstance(e, EndOfData) for e in events)


BODY_BYTES = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\r\n.", b"x" * 37]), max_size=60
).map(b"".join)


@FAST
@given(
    BODY_BYTES,
    st.sampled_from(["reject", "normalise"]),
    st.booleans(),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_body_checks_do_not_depend_on_chunking(
    body: bytes, policy: str, bdat: bool, cuts: list[int]
) -> None:
    # Bare CR/LF detection, normalising, line length and size limits look across chunk
    # boundaries with a few bytes of state: any split must give the same verdict and bytes.
    config = SMTPServerConfig(
        hostname=HOST, bare_newlines=policy, max_text_line=40, max_message_size=1500
    )
    head = b"EHLO a.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.org>\r\n"
    if bdat:
        session = head + b"BDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n"
    else:
        session = head + b"DATA\r\n" + body + b"\r\n.\r\nQUIT\r\n"
    whole = merged(run(greeted(config), [session]))
    split = merged(run(greeted(config), chunked(session, cuts)))
    assert whole == split
    if policy == "normalise" and any(isinstance(e, EndOfData) for e in whole):
        # Normalised content has only CRLF line ends (RFC 5321 section 2.3.8).
        content = b"".join(e for e in whole if isinstance(e, bytes))
        crlf = content.count(b"\r\n")
        assert content.count(b"\r") == crlf == content.count(b"\n")


class SequencingMachine(RuleBasedStateMachine):
    """Command sequencing against a reference model of RFC 5321 section 4.1.4."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = greeted(SMTPServerConfig(hostname=HOST, max_errors=0, max_recipients=2))
        self.helo = False
        self.mail = False
        self.rcpts = 0
        self.rcpt_tried = False

    def exchange(self, line: bytes, reply: Reply | None = None) -> int:
        self.conn.receive_data(line)
        event = self.conn.next_event()
        assert event is not NEED_DATA
        assert not isinstance(event, type(NEED_DATA))
        if isinstance(event, ProtocolViolation):
            reply = event.reply  # the engine's own answer; the application's is not asked
        out = self.conn.send(reply or self.conn.default_reply(event))
        assert self.conn.next_event() is NEED_DATA
        return int(out[:3])

    @rule(extended=st.booleans())
    def hello(self, extended: bool) -> None:
        code = self.exchange(b"EHLO a.example\r\n" if extended else b"HELO a.example\r\n")
        assert code == 250
        self.helo, self.mail, self.rcpts, self.rcpt_tried = True, False, 0, False

    @rule(accept=st.booleans())
    def mail_from(self, accept: bool) -> None:
        expect = 250 if accept else 550
        if not self.helo or self.mail:
            expect = 503
        code = self.exchange(b"MAIL FROM:<a@example.net>\r\n", None if accept else Reply(550, "no"))
        assert code == expect
        self.mail = self.mail or code == 250

    @rule(accept=st.booleans())
    def rcpt_to(self, accept: bool) -> None:
        if not self.mail:
            expect = 503
        elif self.rcpts >= 2:
            expect = 452
        else:
            expect = 250 if accept else 550
        code = self.exchange(b"RCPT TO:<b@example.org>\r\n", None if accept else Reply(550, "no"))
        assert code == expect
        if self.mail and expect != 503:
            self.rcpt_tried = True
        self.rcpts += code == 250

    @rule()
    def data(self) -> None:
        if not self.mail:
            expect = 503
        elif not self.rcpts:
            expect = 554 if self.rcpt_tried else 503
        else:
            expect = 354
        code = self.exchange(b"DATA\r\n")
        assert code == expect
        if code == 354:
            assert self.conn.state is SMTPState.DATA
            self.conn.receive_data(b"body\r\n.\r\n")
            assert isinstance(self.conn.next_event(), DataChunk)
            assert isinstance(self.conn.next_event(), EndOfData)
            assert self.conn.send(Reply(250, "ok"))[:3] == b"250"
            self.mail, self.rcpts, self.rcpt_tried = False, 0, False

    @rule()
    def rset(self) -> None:
        assert self.exchange(b"RSET\r\n") == 250
        self.mail, self.rcpts, self.rcpt_tried = False, 0, False

    @rule(line=st.sampled_from([b"NOOP\r\n", b"VRFY x\r\n", b"HELP\r\n"]))
    def harmless(self, line: bytes) -> None:
        assert self.exchange(line) in (250, 252, 214)

    @precondition(lambda self: True)
    @rule()
    def unknown(self) -> None:
        assert self.exchange(b"FROB\r\n") == 500

    @invariant()
    def state_matches_model(self) -> None:
        if not self.helo:
            want = SMTPState.CONNECTED
        elif not self.mail:
            want = SMTPState.READY
        else:
            want = SMTPState.RCPT if self.rcpts else SMTPState.MAIL
        assert self.conn.state is want


TestSequencing = SequencingMachine.TestCase
TestSequencing.settings = fuzz_settings(60, stateful_step_count=30, deadline=None)
