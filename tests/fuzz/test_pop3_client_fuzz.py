"""Property tests of the POP3 client engine (hypothesis).

* any server bytes, split anywhere, in any state: the engine raises nothing but
  ``RemoteProtocolError``, holds less than a line limit between reads, and reports the
  same events whatever the split;
* any batches of pipelined TRANSACTION commands against our server engine: exactly one
  answer per command, in order, agreeing with a model of the maildrop;
* any message body, streamed by our server engine in any chunk size and delivered to
  the client split anywhere, comes back byte for byte (pipelined with the next answers).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from nosend_proto import RemoteProtocolError
from nosend_proto.pop3_client import ClientConnection
from nosend_proto.pop3_client_events import (
    NEED_DATA,
    Apop,
    Auth,
    Capa,
    CapabilitiesReceived,
    CommandFailed,
    CommandOK,
    ConnectionClosed,
    Dele,
    List,
    ListReply,
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
    Stat,
    StatReply,
    Stls,
    Top,
    Uidl,
    UidlReply,
    UserPass,
)
from tests.fuzz.profiles import fuzz_settings
from tests.proto.pop3_client_driver import Link, bodies
from tests.proto.test_pop3_support import PASSWORD, USER, config, normalise

FUZZ = fuzz_settings(300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = POP3ClientConfig(max_listing_entries=5, max_capabilities=5, max_sasl_steps=3)
LIMIT = max(CONFIG.max_line, CONFIG.max_sasl_line)

# Server bytes: mostly plausible lines (status lines with codes, listing and body lines,
# SASL continuations, the terminator), some noise, line ends usually right.
_LINES = [
    b"+OK", b"+OK 2 320", b"+OK 5 octets", b"-ERR", b"-ERR [AUTH] no", b"-ERR [SYS/TEMP] later",
    b"-ERR [bad code", b".", b"..", b"..x", b".x", b"1 120", b"2 200 more", b"1 uid-1",
    b"2 \x7f", b"0 1", b"PIPELINING", b"SASL PLAIN LOGIN", b"EXPIRE NEVER", b"+ PDE+",
    b"+ ", b"+", b"+ !!", b"+OK <a@b>", b"x" * 600, b"",
]  # fmt: skip
server_line = st.tuples(
    st.one_of(st.sampled_from(_LINES), st.binary(max_size=8)),
    st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b""]),
).map(b"".join)
server_bytes = st.lists(server_line, max_size=30).map(b"".join)

# What the client may have outstanding when the bytes arrive.
scenarios: st.SearchStrategy[tuple[str, list[POP3Command]]] = st.sampled_from(
    [
        ("greeting", []),
        ("auth", [Capa()]),
        ("auth", [Stls()]),
        ("auth", [UserPass("u", "p")]),
        ("auth", [Apop("u", "p")]),
        ("auth", [Auth("LOGIN", "u", "p")]),
        ("auth", [Auth("CRAM-MD5", "u", "p")]),
        ("trans", [Retr(1), Dele(1), Uidl(), List(), Top(1, 2), Stat(), List(1), Noop(), Quit()]),
        ("trans", [Uidl(), Retr(2), Capa()]),
    ]
)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """Split ``data`` at arbitrary points (empty chunks dropped: b"" means EOF)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def prepared(kind: str, commands: list[POP3Command]) -> ClientConnection:
    conn = ClientConnection(CONFIG)
    if kind == "greeting":
        return conn
    conn.receive_data(b"+OK <1.2@host>\r\n")
    conn.next_event()
    if kind == "trans":
        conn.send(Apop("u", "p"))
        conn.receive_data(b"+OK\r\n")
        conn.next_event()
        conn.receive_data(b"+OK\r\nPIPELINING\r\n.\r\n")
        conn.send(Capa())
        conn.next_event()
    for command in commands:
        conn.send(command)
    return conn


def run(conn: ClientConnection, chunks: list[bytes]) -> tuple[list[POP3ClientEvent], bool]:
    """Feed chunks, collect events; return (events with bodies merged, raised)."""
    events: list[POP3ClientEvent] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    # Between reads the engine holds less than one line limit.
                    assert conn.buffered < LIMIT
                    break
                assert not isinstance(event, type(NEED_DATA))
                if isinstance(event, ListReply | UidlReply):
                    assert len(event.entries) <= CONFIG.max_listing_entries
                if events and isinstance(event, MessageData):
                    last = events[-1]
                    if isinstance(last, MessageData):
                        events[-1] = MessageData(last.data + event.data)
                        continue
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return events, False
                conn.data_to_send()
    except RemoteProtocolError:
        return events, True
    raise AssertionError("EOF did not end the connection")  # pragma: no cover


@FUZZ
@given(st.data(), scenarios, server_bytes)
def test_any_server_bytes_any_split(
    data: st.DataObject, scenario: tuple[str, list[POP3Command]], wire: bytes
) -> None:
    whole_events, whole_raised = run(prepared(*scenario), [wire] if wire else [])
    split_events, split_raised = run(prepared(*scenario), data.draw(chunked(wire)))
    assert split_raised == whole_raised
    if not whole_raised:
        assert split_events == whole_events
    else:  # a failure may be noticed a chunk earlier or later; the events before agree
        shorter = min(len(split_events), len(whole_events))
        assert split_events[: shorter - 1] == whole_events[: shorter - 1]


message_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\n.", b".\r\n", b"x", b"H: v"]),
        st.binary(max_size=4),
    ),
    max_size=40,
).map(b"".join)


@FUZZ
@given(st.data(), st.lists(message_bytes, min_size=1, max_size=3), st.integers(1, 9))
def test_bodies_round_trip_through_both_engines(
    data: st.DataObject, messages: list[bytes], chunk_size: int
) -> None:
    link = Link.open(messages=messages, chunk_size=chunk_size)
    link.exchange(Capa())
    link.exchange(UserPass(USER, PASSWORD))
    client = link.client
    out = b"".join(client.send(Retr(i + 1)) for i in range(len(messages))) + client.send(Noop())
    reply = link.server.feed(out)
    events: list[POP3ClientEvent] = []
    for chunk in data.draw(chunked(reply)):
        client.receive_data(chunk)
        while (event := client.next_event()) is not NEED_DATA:
            assert not isinstance(event, type(NEED_DATA))
            events.append(event)
    assert bodies(events) == [normalise(m) for m in messages]
    assert isinstance(events[-1], CommandOK) and events[-1].command == Noop()
    assert client.outstanding == 0 and client.buffered == 0


transaction_commands = st.lists(
    st.one_of(
        st.builds(Retr, st.integers(1, 4)),
        st.builds(Dele, st.integers(1, 4)),
        st.builds(Top, st.integers(1, 4), st.integers(0, 3)),
        st.builds(List, st.one_of(st.none(), st.integers(1, 4))),
        st.builds(Uidl, st.one_of(st.none(), st.integers(1, 4))),
        st.sampled_from([Stat(), Rset(), Noop(), Capa()]),
    ),
    max_size=25,
)


@FUZZ
@given(st.data(), transaction_commands, st.integers(1, 9))
def test_pipelined_answers_match_their_commands(
    data: st.DataObject, commands: list[POP3Command], chunk_size: int
) -> None:
    """Any batch of pipelined commands: one answer each, in order, true to a model."""
    messages = [b"Subject: %d\n\nbody %d\n.\n" % (i, i) for i in range(3)]
    # Failing commands are part of the game: lift the server's limit on them.
    server = config(max_errors=1000)
    link = Link.open(server_config=server, messages=messages, chunk_size=chunk_size)
    link.exchange(Capa())
    link.exchange(UserPass(USER, PASSWORD))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(commands)), max_size=4))))
    bounds = [0, *cuts, len(commands)]
    batches = [commands[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    deleted: set[int] = set()
    for batch in batches:
        events = [e for e in link.exchange(*batch) if not isinstance(e, MessageData)]
        for command in batch:
            exists = lambda n: 1 <= n <= 3 and n not in deleted  # noqa: E731
            event = events.pop(0)
            if isinstance(command, Retr | Top):
                if not exists(command.msgno):
                    assert event == CommandFailed(command, event.text, None)  # type: ignore[union-attr]
                    continue
                assert event == MessageBegins(command, event.text)  # type: ignore[union-attr]
                assert events.pop(0) == MessageComplete(command)
            elif isinstance(command, Dele):
                assert getattr(event, "command", None) == command
                assert isinstance(event, CommandOK) == exists(command.msgno)
                if exists(command.msgno):
                    deleted.add(command.msgno)
            elif isinstance(command, Rset):
                assert event == CommandOK(command, event.text)  # type: ignore[union-attr]
                deleted.clear()
            elif isinstance(command, List | Uidl):
                if command.msgno is not None and not exists(command.msgno):
                    assert event == CommandFailed(command, event.text, None)  # type: ignore[union-attr]
                    continue
                assert isinstance(event, ListReply | UidlReply) and event.command == command
                expected = [n for n in (1, 2, 3) if exists(n)]
                if command.msgno is not None:
                    expected = [command.msgno]
                assert [e.msgno for e in event.entries] == expected
            elif isinstance(command, Stat):
                assert isinstance(event, StatReply) and event.count == 3 - len(deleted)
            elif isinstance(command, Capa):
                assert isinstance(event, CapabilitiesReceived)
            else:
                assert event == CommandOK(command, event.text)  # type: ignore[union-attr]
        assert events == []
    assert link.client.outstanding == 0
    # One round trip per batch (after CAPA, USER and PASS).
    assert link.round_trips == 3 + len(batches)
