"""Property tests of the SMTP client engine (hypothesis).

* arbitrary server bytes, cut at arbitrary points: only ``RemoteProtocolError`` escapes
  (the application below never misuses the engine), and the engine's buffer stays
  within its configured bounds;
* any body, in any chunking, reaches our server engine byte-exact after CRLF
  normalisation, over BDAT, pipelined DATA and lock-step DATA;
* against a server that answers every command at random, each transaction gets exactly
  one result, and the client reports as accepted exactly the messages the server
  acknowledged (a queue relying on it never drops or duplicates mail);
* a session (EHLO, STARTTLS refused or not offered, AUTH, transactions with refused
  recipients, bodies, QUIT) against well-formed server replies, the same replies
  corrupted, or arbitrary server bytes: the events, any ``RemoteProtocolError`` and the
  bytes the client sends between events are the same whether the server's bytes arrive
  whole, split anywhere or one byte at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st

from nosend_proto import RemoteProtocolError
from nosend_proto._smtp_client_wire import ReplyReader
from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    BodyChunk,
    ClientCommand,
    ClientEvent,
    ConnectionClosed,
    EndOfBody,
    Quit,
    Ready,
    Recipient,
    SendBody,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_proto.smtp_events import (
    AuthAttempt,
    BdatChunkEnd,
    DataStart,
    EndOfData,
    Hello,
    MailFrom,
    RcptTo,
    Reply,
    SMTPEvent,
    StartTLS,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState
from tests.fuzz.profiles import fuzz_settings
from tests.proto.smtp_client_support import Link, Mailer, chunks
from tests.proto.smtp_driver import HOST, Harness, default_app

FAST = fuzz_settings(150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = SMTPClientConfig(
    local_hostname="boat.example.net", max_reply_line=600, max_reply_lines=20, bdat_chunk_size=50
)

REPLY_LINES = st.sampled_from(
    [
        b"220 mx ESMTP\r\n",
        b"250-mx\r\n",
        b"250-PIPELINING\r\n",
        b"250-CHUNKING\r\n",
        b"250-STARTTLS\r\n",
        b"250-AUTH PLAIN XOAUTH2\r\n",
        b"250-SIZE 10\r\n",
        b"250 8BITMIME\r\n",
        b"250 2.1.0 ok\r\n",
        b"354 go\r\n",
        b"334 \r\n",
        b"334 eyJzIjoxfQ==\r\n",
        b"235 ok\r\n",
        b"421 bye\r\n",
        b"450 later\r\n",
        b"550 5.1.1 no\r\n",
        b"220 go ahead\r\n",
        b"221 bye\r\n",
        b"500 what\r\n",
    ]
)
EHLO_KEYWORDS = st.lists(
    st.sampled_from(["PIPELINING", "CHUNKING", "STARTTLS", "AUTH PLAIN XOAUTH2", "SIZE 10"]),
    unique=True,
).map(lambda kws: b"".join(b"250-%s\r\n" % k.encode() for k in kws) + b"250 8BITMIME\r\n")
# Mostly a plausible session (a greeting, an EHLO reply, then replies in any order), so
# the deeper states are reached; sometimes plain noise anywhere.
SERVER_BYTES = st.tuples(
    st.sampled_from([b"220 mx ESMTP\r\n", b"220 mx ESMTP\r\n", b"554 no\r\n", b""]),
    EHLO_KEYWORDS,
    st.lists(st.one_of(REPLY_LINES, REPLY_LINES, st.binary(max_size=12)), max_size=30),
).map(lambda t: t[0] + t[1] + b"".join(t[2]))


def act(conn: ClientConnection, event: object, body: bytes) -> None:
    """A well-behaved application: whatever the server says, use the engine correctly."""
    if isinstance(event, TLSHandshakeNeeded):
        conn.start_tls_done()
    elif isinstance(event, Ready):
        if "AUTH" in event.extensions and not conn.authenticated:
            conn.send(Authenticate("u", "token", ("PLAIN", "XOAUTH2")))
        else:
            conn.send(Transaction("a@b.example", (Recipient("c@d.example"),), size=len(body)))
    elif isinstance(event, SendBody):
        conn.send(BodyChunk(body))
        conn.send(EndOfBody())
    if conn.state is ClientState.READY and conn.replies_owed == 0:
        conn.send(Quit())


@FAST
@given(SERVER_BYTES, st.lists(st.integers(1, 50), min_size=1, max_size=8), st.binary(max_size=30))
def test_arbitrary_server_bytes_only_raise_remote_errors(
    data: bytes, cuts: list[int], body: bytes
) -> None:
    conn = ClientConnection(CONFIG)
    body = body if body.isascii() else b"ascii body"
    bound = CONFIG.max_reply_line * CONFIG.max_reply_lines
    try:
        for piece in [*chunks(data, cuts), b""]:
            if conn.state is ClientState.CLOSED:
                break
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                if conn.state is ClientState.TLS_PENDING and not isinstance(
                    event, TLSHandshakeNeeded
                ):
                    continue
                act(conn, event, body)
                if conn.state is ClientState.TLS_PENDING:
                    break
            conn.data_to_send()
            # Memory: whatever is buffered stays within one reply's bound plus one read.
            assert conn._reader.pending() <= bound + 12288 + len(piece)
            if conn.state is ClientState.TLS_PENDING:
                break
    except RemoteProtocolError:
        pass


def normalise(body: bytes) -> bytes:
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return out + b"\r\n" if out and not out.endswith(b"\r\n") else out


BODY = st.binary(max_size=400) | st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"x", b"\r\n.\r\n", b"\xe9", b" "]),
    max_size=60,
).map(b"".join)
SERVERS = st.sampled_from(
    [
        SMTPServerConfig(hostname=HOST, max_text_line=0),
        SMTPServerConfig(hostname=HOST, max_text_line=0, chunking=False),
        SMTPServerConfig(hostname=HOST, max_text_line=0, chunking=False, pipelining=False),
    ]
)


@FAST
@given(st.lists(BODY, min_size=1, max_size=3), st.lists(st.integers(1, 64), min_size=1), SERVERS)
def test_any_body_arrives_byte_exact_after_crlf_normalisation(
    bodies: list[bytes], cuts: list[int], server: SMTPServerConfig
) -> None:
    config = SMTPClientConfig(local_hostname="boat.example.net", bdat_chunk_size=37)
    link = Link(config, server)
    messages = [
        (Transaction("a@b.example", (Recipient("c@d.example"),)), chunks(body, cuts))
        for body in bodies
    ]
    results = Mailer(link, messages).run()
    assert [r.accepted for r in results] == [True] * len(bodies)
    assert link.server.messages == [normalise(body) for body in bodies]
    assert not link.server.rejected


MAIL_CODES = [250, 250, 250, 451, 550, 421]
RCPT_CODES = [250, 250, 250, 450, 550, 421]
DATA_CODES = [354, 354, 354, 451, 554, 421]
END_CODES = [250, 250, 250, 452, 554, 421]


@FAST
@given(st.data(), SERVERS, st.integers(1, 4), st.integers(1, 3))
def test_each_transaction_gets_one_result_and_accepted_means_acknowledged(
    data: st.DataObject, server: SMTPServerConfig, n_messages: int, n_rcpts: int
) -> None:
    acknowledged: list[bytes] = []

    def random_server(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        codes = None
        if isinstance(event, MailFrom):
            codes = MAIL_CODES
        elif isinstance(event, RcptTo):
            codes = RCPT_CODES
        elif isinstance(event, DataStart):
            codes = DATA_CODES
        elif isinstance(event, EndOfData):
            codes = END_CODES
        if codes is None:
            return default_app(conn, event)
        code = data.draw(st.sampled_from(codes))
        if isinstance(event, EndOfData) and code == 250:
            acknowledged.append(link.server.messages[-1])  # the body just completed
        return Reply(code, "random")

    link = Link(SMTPClientConfig(local_hostname="boat.example.net"), server, random_server)
    rcpts = tuple(Recipient(f"r{i}@d.example") for i in range(n_rcpts))
    messages = [
        (Transaction(f"s{i}@b.example", rcpts), [b"message %d\r\n" % i]) for i in range(n_messages)
    ]
    mailer = Mailer(link, messages)
    results = mailer.run()
    assert sum(isinstance(e, ConnectionClosed) for e in mailer.events) == 1
    # Exactly one result for each transaction handed to the engine, in order.
    handed = n_messages - len(mailer._queue)
    assert [r.transaction.mail_from for r in results] == [f"s{i}@b.example" for i in range(handed)]
    # Accepted by the client exactly when acknowledged by the server (mail is sacred).
    accepted = [b"message %d\r\n" % int(r.transaction.mail_from[1]) for r in results if r.accepted]
    assert accepted == acknowledged
    # Every recipient of every result is exactly one of delivered, retried or failed,
    # and only an acknowledged message has delivered recipients.
    for r in results:
        assert not set(map(id, r.delivered)) & set(map(id, r.retry))
        assert bool(r.delivered) == r.accepted


# -- the events and the bytes sent do not depend on how the server's bytes are split -------


@dataclass(frozen=True, slots=True)
class Scenario:
    """The client's side of a session: its configuration and what the application sends."""

    config: SMTPClientConfig
    auth: bool
    messages: tuple[tuple[Transaction, tuple[bytes, ...]], ...]


class Sender:
    """The application of a :class:`Scenario`: AUTH when asked for and offered, then each
    transaction in turn, then QUIT. It acts on events only (never on a NEED_DATA), as an
    application does, so the same events get the same commands however the bytes came."""

    def __init__(self, scenario: Scenario, send: Callable[[ClientCommand], object]) -> None:
        self.scenario = scenario
        self.send = send
        self.queue = list(scenario.messages)
        self.body: tuple[bytes, ...] = ()
        self.tried_auth = self.quit_sent = False

    def on_event(self, conn: ClientConnection, event: ClientEvent) -> None:
        if isinstance(event, Ready) and self.scenario.auth and not self.tried_auth:
            if "AUTH" in event.extensions.keywords:
                self.tried_auth = True
                self.send(Authenticate("u", "secret", ("CRAM-MD5", "LOGIN", "PLAIN")))
        elif isinstance(event, SendBody):
            for chunk in self.body:
                self.send(BodyChunk(chunk))
            self.send(EndOfBody())
        if conn.state is not ClientState.READY:
            return
        if self.queue:
            transaction, self.body = self.queue.pop(0)
            self.send(transaction)
        elif not self.quit_sent:
            self.quit_sent = True
            self.send(Quit())


# A Trace is the events by value, the bytes the client wrote between them (one item per
# gap, however many writes), and at the end (the error's type name, its message) or
# STARTTLS_220.
Trace = list[object]
# The 220 to STARTTLS ends the comparison: bytes read together with it are refused on
# purpose (RFC 3207 section 4, CVE-2011-0411), bytes read after it count as TLS, so from
# there on the outcome depends on the split by design.
STARTTLS_220 = "220 to STARTTLS"


def replay(scenario: Scenario, pieces: list[bytes]) -> Trace:
    """Feed ``pieces`` then EOF to a fresh engine driven by :class:`Sender`; the trace."""
    conn = ClientConnection(scenario.config)
    trace: Trace = []

    def write(data: bytes) -> None:
        if data and trace and isinstance(trace[-1], bytes):
            trace[-1] += data
        elif data:
            trace.append(data)

    sender = Sender(scenario, lambda command: write(conn.send(command)))
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                # RFC 2920: flush before waiting; before an event, what reaching it wrote.
                write(conn.data_to_send())
                if event is NEED_DATA:
                    break
                assert not isinstance(event, type(NEED_DATA))
                if isinstance(event, TLSHandshakeNeeded):
                    return [*trace, STARTTLS_220]
                trace.append(event)
                if isinstance(event, ConnectionClosed):
                    return trace
                sender.on_event(conn, event)
    except RemoteProtocolError as err:
        write(conn.data_to_send())
        if str(err).startswith("data after the 220 reply to STARTTLS"):
            return [*trace, STARTTLS_220]
        return [*trace, (type(err).__name__, str(err))]
    raise AssertionError("EOF did not close the connection")  # pragma: no cover


def ending(trace: Trace) -> str:
    """How a trace ended, for hypothesis's statistics (``--hypothesis-show-statistics``)."""
    last = trace[-1]
    if isinstance(last, ConnectionClosed):
        return "EOF" if last.reply is None else f"{last.reply.code}"
    return str(last[0] if isinstance(last, tuple) else last)


TEXTS = st.sampled_from(["random", "first\nsecond", "5.1.1 one\n5.1.1 two\nthree", ""])


def server_bytes(data: st.DataObject, scenario: Scenario, server: SMTPServerConfig) -> bytes:
    """Everything our server engine writes to ``scenario``'s client, answering at random
    (multi-line texts too): the greeting and each burst of replies, joined."""

    def answer(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
        codes = {
            MailFrom: MAIL_CODES, RcptTo: RCPT_CODES, DataStart: DATA_CODES,
            EndOfData: END_CODES, BdatChunkEnd: END_CODES, AuthAttempt: [235, 535, 454],
            Hello: [250, 250, 250, 502], StartTLS: [454, 502],
        }.get(type(event))  # fmt: skip
        if codes is None:
            return default_app(conn, event)
        code = data.draw(st.sampled_from(codes), label=type(event).__name__)
        if code == 250 and isinstance(event, Hello):
            return conn.default_reply(event)  # with the extensions
        return Reply(code, data.draw(TEXTS))

    harness = Harness(server, answer)
    client = ClientConnection(scenario.config)
    wire = bytearray(harness.greet())
    client.receive_data(bytes(wire))
    outgoing = bytearray()
    sender = Sender(scenario, lambda command: outgoing.extend(client.send(command)))
    while True:
        event = client.next_event()
        if event is NEED_DATA:
            outgoing += client.data_to_send()
            if not outgoing:
                return bytes(wire)  # the server owes nothing more, or waits for a body
            replies = harness.feed(bytes(outgoing))
            outgoing.clear()
            wire += replies
            client.receive_data(replies)
            if harness.conn.state is SMTPState.CLOSED:
                client.receive_data(b"")
            continue
        assert not isinstance(event, type(NEED_DATA) | TLSHandshakeNeeded)
        if isinstance(event, ConnectionClosed):
            return bytes(wire)
        sender.on_event(client, event)


ASCII_BODY = BODY.map(lambda body: bytes(c & 0x7F for c in body))
SCENARIOS = st.builds(
    Scenario,
    st.builds(
        SMTPClientConfig,
        local_hostname=st.just("boat.example.net"),
        starttls=st.booleans(),
        auth_requires_tls=st.just(False),
        pipelining=st.booleans(),
        chunking=st.booleans(),
        max_reply_line=st.just(CONFIG.max_reply_line),
        max_reply_lines=st.just(CONFIG.max_reply_lines),
        bdat_chunk_size=st.integers(1, 40),
    ),
    st.booleans(),
    st.lists(
        st.tuples(st.integers(1, 4), ASCII_BODY, st.lists(st.integers(1, 64), max_size=3)).map(
            lambda t: (
                Transaction(
                    "a@b.example",
                    tuple(Recipient(f"r{i}@d.example") for i in range(t[0])),
                    size=len(t[1]),
                ),
                tuple(chunks(t[1], t[2])),
            )
        ),
        min_size=1,
        max_size=3,
    ).map(tuple),
)
# SERVERS, with or without STARTTLS (always refused: see STARTTLS_220) and AUTH.
SERVERS_TLS_AUTH = st.builds(
    replace,
    SERVERS,
    tls_available=st.booleans(),
    auth_mechanisms=st.sampled_from([(), ("PLAIN",), ("LOGIN",), ("LOGIN", "CRAM-MD5")]),
    auth_requires_tls=st.just(False),
)
GARBAGE = st.one_of(REPLY_LINES, st.binary(max_size=12))


@st.composite
def split_anywhere(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (no empty piece: b"" means EOF)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@FAST
@given(st.data(), SCENARIOS, st.sampled_from(["server", "corrupted", "noise"]))
def test_events_and_bytes_sent_do_not_depend_on_the_split(
    data: st.DataObject, scenario: Scenario, kind: str
) -> None:
    if kind == "noise":
        wire = data.draw(SERVER_BYTES, label="wire")
    else:
        wire = server_bytes(data, scenario, data.draw(SERVERS_TLS_AUTH, label="server"))
    if kind == "corrupted":
        # Garbage put in, or bytes cut out, anywhere in a well-formed conversation.
        at = data.draw(st.integers(0, len(wire)), label="at")
        cut_out = data.draw(st.integers(0, 8), label="cut out")
        wire = wire[:at] + data.draw(GARBAGE, label="put in") + wire[at + cut_out :]
    whole = replay(scenario, [wire] if wire else [])
    event(f"{kind}: ends with {ending(whole)}")
    assert replay(scenario, data.draw(split_anywhere(wire), label="split")) == whole
    assert replay(scenario, [wire[i : i + 1] for i in range(len(wire))]) == whole


def test_the_split_comparison_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: a reply reader that takes six octets without their LF for a whole
    line gives other events when the same bytes come one at a time."""
    original = ReplyReader._next_line

    def hasty(reader: ReplyReader) -> bytes | None:
        line = original(reader)
        if line is None and len(reader._data) >= 6:
            line = bytes(reader._data)
            reader._data.clear()
            reader._scanned = 0
        return line

    wire = b"220 mx ESMTP\r\n250 mx\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n"
    transaction = Transaction("a@b.example", (Recipient("c@d.example"),))
    scenario = Scenario(CONFIG, False, ((transaction, (b"hi\r\n",)),))
    whole = replay(scenario, [wire])
    assert isinstance(whole[-1], ConnectionClosed) and whole[-1].reply is not None
    monkeypatch.setattr(ReplyReader, "_next_line", hasty)
    assert replay(scenario, [wire]) == whole  # read whole, no line is ever partial
    assert replay(scenario, [wire[i : i + 1] for i in range(len(wire))]) != whole
