"""A tiny POP3 session that answers the engine's events from an in-memory maildrop.

Shared by the POP3 transcript, interop and fuzz tests; it holds the policy a real session
would (check the password, list the messages, stream them in chunks, apply deletions), so
the tests read as client/server transcripts. The reference encoder below is a deliberately
naive per-line implementation of RFC 1939 section 3, used to check the fast one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nosend_proto import LocalProtocolError
from nosend_proto.pop3_events import (
    NEED_DATA,
    NEED_FLUSH,
    AuthAttempt,
    ConnectionClosed,
    Greeting,
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
    TooManyErrors,
    Top,
    UpdateApplied,
    UpdateFailed,
)
from nosend_proto.pop3_state import ServerConnection, wire_size

NONCE = "1896.697170952"
HOST = "mail.example"
USER = "bob"
PASSWORD = "tanstaaf"

MESSAGES: tuple[bytes, ...] = (
    b"From: a@example\nSubject: one\n\nhello\n.dot line\n",
    b"From: b@example\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3",
    b"Subject: three\n\n.\n..\nlast\n",
)


def config(**overrides: object) -> POP3ServerConfig:
    """A configuration for tests: cleartext logins allowed unless overridden."""
    values: dict[str, object] = {"hostname": HOST, "auth_requires_tls": False}
    values.update(overrides)
    return POP3ServerConfig(**values)  # type: ignore[arg-type]


@dataclass
class Session:
    """Drive a ``ServerConnection`` like a runner would; record what happened."""

    conn: ServerConnection
    messages: list[bytes] = field(default_factory=lambda: list(MESSAGES))
    chunk_size: int = 7
    reject_code: str | None = "AUTH"
    fail_update: bool = False
    unavailable: set[int] = field(default_factory=set)
    events: list[object] = field(default_factory=list)
    applied: tuple[MessageInfo, ...] | None = None
    final: object = None
    tls_started: int = 0
    greeting: bytes = b""

    @classmethod
    def start(cls, cfg: POP3ServerConfig | None = None, **kwargs: object) -> Session:
        """Open a connection and greet."""
        conn = ServerConnection(cfg or config(), nonce=NONCE)
        session = cls(conn, **kwargs)  # type: ignore[arg-type]
        session.greeting = conn.send(Greeting())
        return session

    def listing(self) -> list[MessageInfo]:
        """What the maildrop holds, as LoginAccepted wants it."""
        return [MessageInfo(wire_size(m), f"uid-{i + 1}") for i, m in enumerate(self.messages)]

    def feed(self, data: bytes) -> bytes:
        """Deliver client bytes and return everything the server writes in response."""
        self.conn.receive_data(data)
        return self.run()

    def say(self, line: str) -> str:
        """Send one command line; return the server's reply text."""
        return self.feed(line.encode() + b"\r\n").decode("utf-8", "replace")

    def close(self) -> bytes:
        """The client drops the connection."""
        return self.feed(b"")

    def run(self) -> bytes:
        """Process events until the engine needs data or the session is over."""
        out: list[bytes] = []
        conn = self.conn
        while self.final is None:
            event = conn.next_event()
            if event is NEED_DATA:
                out.append(conn.data_to_send())
                break
            if event is NEED_FLUSH:
                out.append(conn.data_to_send())
                continue
            self.events.append(event)
            if isinstance(event, AuthAttempt):
                creds = event.credentials
                if creds.username == USER and creds.matches_secret(PASSWORD):
                    out.append(conn.send(LoginAccepted(self.listing())))
                else:
                    out.append(conn.send(LoginRejected(code=self.reject_code)))
            elif isinstance(event, Retrieve | Top):
                if event.msgno in self.unavailable:
                    out.append(conn.send(MessageUnavailable()))
                    continue
                content = self.messages[event.msgno - 1]
                size = max(1, self.chunk_size)
                for start in range(0, len(content), size):
                    out.append(conn.send(MessageChunk(content[start : start + size])))
                    if not conn.wants_content:
                        break
                out.append(conn.send(MessageEnd()))
            elif isinstance(event, Quit):
                if self.fail_update:
                    out.append(conn.send(UpdateFailed()))
                else:
                    self.applied = event.messages
                    out.append(conn.send(UpdateApplied()))
            elif isinstance(event, StartTLS):
                out.append(conn.send(TLSReady()))
                self.tls_started += 1
            elif isinstance(event, ConnectionClosed | TooManyErrors):
                out.append(conn.data_to_send())
                self.final = event
            else:  # pragma: no cover - a new event kind the tests do not know
                raise AssertionError(f"unexpected event {event!r}")
        return b"".join(out)


def logged_in(**kwargs: object) -> Session:
    """A session already in TRANSACTION state for USER with MESSAGES."""
    session = Session.start(**kwargs)  # type: ignore[arg-type]
    reply = session.feed(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    assert reply.startswith(b"+OK send PASS\r\n+OK maildrop has"), reply
    return session


def normalise(content: bytes) -> bytes:
    """The stored message as CRLF text: CR runs before LF and at the end are line ends."""
    text = re.sub(rb"\r+\n", b"\n", content)
    text = re.sub(rb"\r+\Z", b"\n", text)
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


def reference_encode(content: bytes, top: int | None = None) -> bytes:
    """RETR/TOP body for ``content``, one line at a time (slow, obviously right)."""
    lines = content.split(b"\n")
    rest = lines.pop()  # what follows the last LF
    lines = [line.rstrip(b"\r") for line in lines]
    if rest:
        lines.append(rest.rstrip(b"\r"))  # an unterminated last line still is a line
    if top is not None:
        try:
            blank = lines.index(b"")
        except ValueError:
            blank = len(lines)
        lines = lines[: blank + 1 + top]
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


def reference_decode(wire: bytes) -> bytes:
    """Undo RFC 1939 section 3 stuffing of a multi-line body ending in ``.CRLF``."""
    assert wire.endswith(b".\r\n")
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b"."
    body = lines[:-2]
    for line in body:
        assert line != b".", "terminator inside the body"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body)


def test_reference_encoder_matches_rfc_example() -> None:
    """The reference itself: stuffing, LF conversion, final line completion."""
    assert reference_encode(b"a\n.b\nc") == b"a\r\n..b\r\nc\r\n.\r\n"
    assert reference_decode(b"a\r\n..b\r\nc\r\n.\r\n") == b"a\r\n.b\r\nc\r\n"
    assert reference_encode(b"H: 1\n\nx\ny\n", top=1) == b"H: 1\r\n\r\nx\r\n.\r\n"


def test_session_rejects_answers_out_of_turn() -> None:
    """The harness relies on the engine refusing a wrong answer."""
    session = Session.start()
    try:
        session.conn.send(MessageEnd())
    except LocalProtocolError:
        pass
    else:  # pragma: no cover
        raise AssertionError("MessageEnd accepted in AUTHORIZATION")
