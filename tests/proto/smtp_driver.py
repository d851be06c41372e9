"""Test drivers for the SMTP server engine: an in-memory harness, transcripts, a socket loop.

Not a runner: the real runners live in ``nosend_runners``. This is the least code that lets
tests speak to the engine the way a client would.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from nosend_proto.smtp_events import (
    NEED_DATA,
    Bdat,
    ConnectionClosed,
    DataChunk,
    DataRejected,
    EndOfData,
    Reply,
    SMTPEvent,
)
from nosend_proto.smtp_state import ServerConnection, SMTPServerConfig, SMTPState

App = Callable[[ServerConnection, SMTPEvent], Reply | None]

HOST = "mx.example.org"


def default_app(conn: ServerConnection, event: SMTPEvent) -> Reply | None:
    """Accept everything the engine lets through."""
    if isinstance(event, DataChunk | Bdat | ConnectionClosed):
        return None
    return conn.default_reply(event)


@dataclass
class Harness:
    """An engine plus the application's side: collected events, bodies and output."""

    config: SMTPServerConfig = field(default_factory=lambda: SMTPServerConfig(hostname=HOST))
    app: App = default_app
    nonce: str = "nonce42"

    def __post_init__(self) -> None:
        self.conn = ServerConnection(self.config, nonce=self.nonce)
        self.events: list[SMTPEvent] = []
        self.body = bytearray()
        self.messages: list[bytes] = []
        self.rejected: list[DataRejected] = []

    def greet(self, reply: Reply | None = None) -> bytes:
        return self.conn.send(reply or Reply(220, f"{HOST} ESMTP"))

    def feed(self, data: bytes) -> bytes:
        """Give ``data`` to the engine, answer every event, return the reply bytes."""
        self.conn.receive_data(data)
        return self.pump()

    def pump(self) -> bytes:
        out = bytearray()
        while self.conn.state not in (SMTPState.CLOSED, SMTPState.TLS_PENDING):
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            self.events.append(event)
            if isinstance(event, DataChunk):
                self.body += event.data
            elif isinstance(event, EndOfData):
                self.messages.append(bytes(self.body))
                self.body.clear()
            elif isinstance(event, DataRejected):
                self.rejected.append(event)
                self.body.clear()
            elif isinstance(event, ConnectionClosed):
                break
            reply = self.app(self.conn, event)
            if reply is not None:
                out += self.conn.send(reply)
        return bytes(out)


def run_transcript(harness: Harness, transcript: str) -> None:
    """Play ``C:`` lines to the engine and compare its output with the ``S:`` lines.

    Consecutive ``C:`` lines are sent together (as a pipelining client would); the ``S:``
    lines that follow are what the engine must have written by then. A line ``S: 220 ...``
    before any ``C:`` line is the greeting the harness sends. ``C:`` text is sent with
    CRLF appended; ``\\r``/``\\n`` escapes inside it are honoured for raw bytes.
    """
    pending_client: list[str] = []
    expected: list[str] = []
    output = b""
    greeted = harness.conn.state is not SMTPState.GREETING

    def flush() -> None:
        nonlocal output
        if pending_client:
            raw = "".join(line + "\r\n" for line in pending_client)
            raw = raw.replace("\\r", "\r").replace("\\n", "\n")
            output += harness.feed(raw.encode())
            pending_client.clear()

    def check() -> None:
        nonlocal output
        flush()
        want = "".join(line + "\r\n" for line in expected).encode()
        got = output.decode(errors="replace")
        assert got == want.decode(errors="replace"), f"\n got:\n{got}\nwant:\n{want.decode()}"
        output = b""
        expected.clear()

    for raw_line in transcript.strip().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        who, _, text = line.partition(":")
        text = text[1:] if text.startswith(" ") else text
        if who == "S":
            if not greeted:
                greeted = True
                output += harness.greet(Reply(int(text[:3]), text[4:]))
            flush()
            expected.append(text)
        elif who == "C":
            if expected:
                check()
            pending_client.append(text)
        else:
            raise ValueError(f"bad transcript line {raw_line!r}")
    check()


def serve_socket(
    sock: socket.socket,
    harness: Harness,
    chunk: int = 65536,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Drive ``harness`` over a connected socket until the conversation ends.

    With ``tls``, a 220 to STARTTLS is followed by a server-side handshake and
    ``start_tls_done()`` (RFC 3207 section 4).
    """
    try:
        sock.sendall(harness.greet())
        while harness.conn.state is not SMTPState.CLOSED:
            if harness.conn.state is SMTPState.TLS_PENDING:
                assert tls is not None
                sock = tls.wrap_socket(sock, server_side=True)
                harness.conn.start_tls_done()
                out = harness.pump()
            else:
                data = sock.recv(chunk)
                out = harness.feed(data)
                if not data:
                    break
            if out:
                sock.sendall(out)
    finally:
        sock.close()


def check_state_facts(conn: ServerConnection) -> None:
    """Assert that the state agrees with what the engine remembers of the session.

    The state comes from the transition table, the facts (the HELO name, the open
    transaction, its recipients) from the side effects of each reply: a wrong table entry
    or a side effect gone missing makes them disagree.
    """
    state = conn.state
    helo, mail, rcpts = conn.helo_name, conn.mail_params, conn.recipients
    if state in (SMTPState.GREETING, SMTPState.REFUSED, SMTPState.CONNECTED):
        assert helo is None and mail is None, state
    elif state in (SMTPState.READY, SMTPState.AUTH):
        assert helo is not None and mail is None and rcpts == 0, state
    elif state is SMTPState.MAIL:
        assert helo is not None and mail is not None and rcpts == 0, state
    elif state in (SMTPState.RCPT, SMTPState.DATA):
        assert helo is not None and mail is not None and rcpts > 0, state
