"""Property tests of the POP3 server engine and its message encoder (hypothesis).

* any content and any chunking: the fast encoder equals the per-line reference, undoing
  the stuffing gives the CRLF message back, and the wire size counts exactly that;
* any client bytes in any chunking: the engine never raises and answers the same bytes;
* a state machine of DELE/RSET/LIST/STAT/UIDL/RETR/TOP/QUIT against a model maildrop.
"""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nosend_proto._pop3_stuffing import MessageEncoder
from nosend_proto.pop3_events import ConnectionClosed, Quit, TooManyErrors
from nosend_proto.pop3_state import POP3State, WireSizeCounter, wire_size
from nosend_store._durable import LineEndingNormaliser, measure_wire_size
from tests.fuzz.profiles import fuzz_settings
from tests.proto.test_pop3_support import (
    PASSWORD,
    Session,
    config,
    logged_in,
    normalise,
    reference_decode,
    reference_encode,
)

FUZZ = fuzz_settings(300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Content rich in the bytes that matter: CR, LF and dots, plus anything else.
message_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\n.", b"x", b"H: v"]),
        st.binary(max_size=4),
    ),
    max_size=40,
).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Split ``data`` at arbitrary points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def encode(chunks: list[bytes], top: int | None = None) -> bytes:
    encoder = MessageEncoder(top)
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


@FUZZ
@given(st.data(), message_bytes)
def test_stuffing_round_trip_and_size(data: st.DataObject, content: bytes) -> None:
    chunks = data.draw(chunked(content))
    wire = encode(chunks)
    assert wire == reference_encode(content)  # chunking invariance: one right answer
    decoded = reference_decode(wire)
    assert wire_size(content) == len(decoded)
    # Undoing the transfer encoding gives the message with CRLF line ends.
    assert decoded == normalise(content)
    counter = WireSizeCounter()
    for chunk in chunks:
        counter.feed(chunk)
    assert counter.size == wire_size(chunks) == len(decoded)


@FUZZ
@given(st.data(), message_bytes)
def test_wire_size_agrees_with_the_store(data: st.DataObject, content: bytes) -> None:
    # The store records sizes at delivery with its own stdlib-only normaliser; LIST
    # reports them and RETR must send exactly that many octets.
    chunks = data.draw(chunked(content))
    stored = b"".join(_store_normaliser_run(chunks))
    assert measure_wire_size(io.BytesIO(content)) == wire_size(content)
    assert wire_size(content) == wire_size(stored) == len(normalise(stored))
    assert encode([stored]) == encode(chunks)


def _store_normaliser_run(chunks: list[bytes]) -> list[bytes]:
    norm = LineEndingNormaliser()
    return [norm.feed(c) for c in chunks] + [norm.finish()]


@FUZZ
@given(st.data(), message_bytes, st.integers(0, 6))
def test_top_matches_reference(data: st.DataObject, content: bytes, lines: int) -> None:
    chunks = data.draw(chunked(content))
    assert encode(chunks, lines) == reference_encode(content, lines)


client_bytes = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"\r\n",
                b"\n",
                b"USER bob\r\n",
                f"PASS {PASSWORD}\r\n".encode(),
                b"AUTH PLAIN\r\n",
                b"AUTH LOGIN\r\n",
                b"AUTH CRAM-MD5\r\n",
                b"*\r\n",
                b"STAT\r\n",
                b"LIST\r\n",
                b"UIDL 2\r\n",
                b"RETR 1\r\n",
                b"TOP 2 1\r\n",
                b"DELE 1\r\n",
                b"RSET\r\n",
                b"CAPA\r\n",
                b"STLS\r\n",
                b"QUIT\r\n",
                b" ",
                b"x" * 300,
            ]
        ),
        st.binary(max_size=20),
    ),
    max_size=30,
).map(b"".join)


@FUZZ
@given(st.data(), client_bytes, st.booleans())
def test_any_client_bytes_any_chunking(data: st.DataObject, script: bytes, login: bool) -> None:
    def fresh() -> Session:
        cfg = config(max_errors=1000, max_auth_failures=1000)
        return logged_in(cfg=cfg) if login else Session.start(cfg)

    whole = fresh()
    expected = whole.feed(script) + whole.close()
    chunks = data.draw(chunked(script))
    pieces = fresh()
    got = b"".join(pieces.feed(c) for c in chunks if c) + pieces.close()
    assert got == expected
    assert pieces.events == whole.events
    assert isinstance(pieces.final, ConnectionClosed)
    assert pieces.conn.state is POP3State.CLOSED
    assert not got or got.endswith(b"\r\n")
    # RFC 1957: a space always follows the status indicator (the messages served here
    # hold no line starting with +OK or -ERR, so every such line is a status line).
    for line in got.split(b"\r\n"):
        if line.startswith((b"+OK", b"-ERR")):
            assert line.startswith((b"+OK ", b"-ERR ")), line


@fuzz_settings(100, deadline=None)
@given(client_bytes)
def test_error_limits_always_end_the_session(script: bytes) -> None:
    session = Session.start(config(max_errors=2, max_auth_failures=1))
    session.feed(script)
    session.close()
    assert session.conn.errors <= 2 and session.conn.auth_failures <= 1
    assert isinstance(session.final, ConnectionClosed | TooManyErrors)


class MaildropMachine(RuleBasedStateMachine):
    """Message numbers, deletion marks and QUIT against a model (RFC 1939 sections 5-6)."""

    def __init__(self) -> None:
        super().__init__()
        self.session: Session
        self.deleted: set[int] = set()
        self.done = False

    @initialize(contents=st.lists(message_bytes, max_size=6))
    def login(self, contents: list[bytes]) -> None:
        cfg = config(max_errors=10_000)
        self.session = logged_in(cfg=cfg, messages=contents, chunk_size=3)
        self.sizes = [wire_size(c) for c in contents]

    def live(self) -> list[int]:
        return [n for n in range(1, len(self.sizes) + 1) if n not in self.deleted]

    def bad(self, n: int) -> str | None:
        if not 1 <= n <= len(self.sizes):
            return f"-ERR no such message, only {len(self.sizes)} messages in maildrop\r\n"
        if n in self.deleted:
            return f"-ERR message {n} already deleted\r\n"
        return None

    @precondition(lambda self: not self.done)
    @rule(n=st.integers(0, 8))
    def dele(self, n: int) -> None:
        reply = self.session.say(f"DELE {n}")
        assert reply == (self.bad(n) or f"+OK message {n} deleted\r\n")
        self.deleted.add(n)

    @precondition(lambda self: not self.done)
    @rule()
    def rset(self) -> None:
        self.deleted.clear()
        assert self.session.say("RSET").startswith(f"+OK maildrop has {len(self.sizes)} ")

    @precondition(lambda self: not self.done)
    @rule()
    def stat(self) -> None:
        live = self.live()
        total = sum(self.sizes[n - 1] for n in live)
        assert self.session.say("STAT") == f"+OK {len(live)} {total}\r\n"

    @precondition(lambda self: not self.done)
    @rule()
    def list_all(self) -> None:
        lines = self.session.say("LIST").split("\r\n")[1:-2]
        assert lines == [f"{n} {self.sizes[n - 1]}" for n in self.live()]

    @precondition(lambda self: not self.done)
    @rule(n=st.integers(0, 8))
    def uidl_one(self, n: int) -> None:
        assert self.session.say(f"UIDL {n}") == (self.bad(n) or f"+OK {n} uid-{n}\r\n")

    @precondition(lambda self: not self.done)
    @rule(n=st.integers(0, 8), lines=st.none() | st.integers(0, 3))
    def fetch(self, n: int, lines: int | None) -> None:
        command = f"RETR {n}" if lines is None else f"TOP {n} {lines}"
        reply = self.session.feed(command.encode() + b"\r\n")
        error = self.bad(n)
        if error:
            assert reply == error.encode()
            return
        status = b"+OK top of message follows\r\n"
        if lines is None:
            status = f"+OK {self.sizes[n - 1]} octets\r\n".encode()
        assert reply == status + reference_encode(self.session.messages[n - 1], lines)
        assert self.session.conn.state is POP3State.TRANSACTION

    @precondition(lambda self: not self.done)
    @rule()
    def quit(self) -> None:
        self.session.say("QUIT")
        quits = [e for e in self.session.events if isinstance(e, Quit)]
        assert len(quits) == 1
        assert quits[0].msgnos == tuple(sorted(self.live_deleted()))
        assert self.session.applied == tuple(
            self.session.listing()[n - 1] for n in sorted(self.live_deleted())
        )
        self.done = True

    def live_deleted(self) -> set[int]:
        return {n for n in self.deleted if 1 <= n <= len(self.sizes)}

    @precondition(lambda self: not self.done)
    @rule()
    def drop(self) -> None:
        self.session.close()
        assert self.session.final == ConnectionClosed(peer_closed=True)
        assert not any(isinstance(e, Quit) for e in self.session.events)
        self.done = True

    @precondition(lambda self: self.done)
    @rule()
    def closed_stays_closed(self) -> None:
        assert isinstance(self.session.conn.next_event(), ConnectionClosed)
        assert self.session.conn.state is POP3State.CLOSED

    @invariant()
    def marks_match(self) -> None:
        if hasattr(self, "session") and not self.done:
            assert self.session.conn.deleted_msgnos() == tuple(sorted(self.live_deleted()))


TestMaildrop = MaildropMachine.TestCase
TestMaildrop.settings = fuzz_settings(60, stateful_step_count=25, deadline=None)
