"""Test drivers for the SMTP client engine: in memory against our server engine, or a script.

A *round trip* is counted each time the client has written and must wait for the server's
replies to go on: exactly what costs airtime on a slow link. The greeting is delivered when
the link is made and is not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    AuthFailed,
    AuthSucceeded,
    BodyChunk,
    ClientEvent,
    ConnectionClosed,
    EndOfBody,
    MessageResult,
    Quit,
    Ready,
    SendBody,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_proto.smtp_state import SMTPServerConfig, SMTPState
from tests.proto.smtp_driver import HOST, App, Harness, default_app

CLIENT = SMTPClientConfig(local_hostname="boat.example.net", auth_requires_tls=False)


def client_events(conn: ClientConnection) -> list[ClientEvent]:
    """Every event available without more input."""
    out: list[ClientEvent] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
        if isinstance(event, ConnectionClosed | TLSHandshakeNeeded):
            return out  # after TLSHandshakeNeeded, next_event() waits for start_tls_done()


def crlf(text: str) -> bytes:
    """Script text with ``\\n`` line ends, as CRLF wire bytes."""
    return text.replace("\n", "\r\n").encode()


class Link:
    """A client engine wired to a server engine :class:`Harness` in memory."""

    def __init__(
        self,
        client: SMTPClientConfig = CLIENT,
        server: SMTPServerConfig | None = None,
        app: App = default_app,
    ) -> None:
        self.client = ClientConnection(client)
        self.server = Harness(server or SMTPServerConfig(hostname=HOST), app)
        self.round_trips = 0
        self.writes: list[bytes] = []  # what the client wrote, one item per round trip
        self.replies: list[bytes] = []  # what the server answered, one item per round trip
        self._outgoing = bytearray()
        self.client.receive_data(self.server.greet())

    def send(self, command: object) -> None:
        """``client.send(command)``; the bytes wait for the next round trip."""
        self._outgoing += self.client.send(command)  # type: ignore[arg-type]

    def exchange(self) -> None:
        """One round trip: deliver what the client wrote, feed back every reply."""
        self._outgoing += self.client.data_to_send()
        data = bytes(self._outgoing)
        self._outgoing.clear()
        self.round_trips += 1
        self.writes.append(data)
        replies = self.server.feed(data)
        self.replies.append(replies)
        if self.server.conn.state is SMTPState.TLS_PENDING:
            self.server.conn.start_tls_done()  # the "handshake" of an in-memory link
        self.client.receive_data(replies)
        if self.server.conn.state is SMTPState.CLOSED:
            self.client.receive_data(b"")

    def run(self, on_event: Callable[[ClientEvent], None]) -> list[ClientEvent]:
        """Drive the client until nothing is owed and no event is left (or it closed)."""
        seen: list[ClientEvent] = []
        while True:
            event = self.client.next_event()
            if event is NEED_DATA:
                if self.client.replies_owed == 0 and not self._outgoing:
                    return seen
                self.exchange()
                continue
            assert not isinstance(event, type(NEED_DATA))
            seen.append(event)
            if isinstance(event, TLSHandshakeNeeded):
                self.client.start_tls_done()
            on_event(event)
            if isinstance(event, ConnectionClosed):
                return seen


@dataclass
class Mailer:
    """An application: authenticate (optionally), send every message, QUIT.

    Messages are (transaction, body chunks). The next transaction goes out as soon as the
    engine is READY, so pipelining shows in the round-trip count.
    """

    link: Link
    messages: list[tuple[Transaction, list[bytes]]]
    auth: Authenticate | None = None
    quit: bool = True
    results: list[MessageResult] = field(default_factory=list)
    events: list[ClientEvent] = field(default_factory=list)
    _quit_sent: bool = False
    _authenticating: bool = False

    def __post_init__(self) -> None:
        self._queue = list(self.messages)

    def on_event(self, event: ClientEvent) -> None:
        if isinstance(event, Ready):
            if self.auth is not None:
                self._authenticating = True
                self.link.send(self.auth)
                return
        elif isinstance(event, AuthSucceeded | AuthFailed):
            self._authenticating = False
        elif isinstance(event, SendBody):
            body = self._current_body
            for chunk in body:
                self.link.send(BodyChunk(chunk))
            self.link.send(EndOfBody())
        elif isinstance(event, MessageResult):
            self.results.append(event)
        self._next()

    def _next(self) -> None:
        client = self.link.client
        if client.state is not ClientState.READY or self._authenticating:
            return
        if self._queue:
            transaction, self._current_body = self._queue.pop(0)
            self.link.send(transaction)
        elif self.quit and not self._quit_sent:
            self._quit_sent = True
            self.link.send(Quit())

    def run(self) -> list[MessageResult]:
        self.events = self.link.run(self.on_event)
        return self.results


def chunks(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given sizes (cycled); the rest as one last piece."""
    out = []
    pos = 0
    sizes = list(sizes) or [len(data) or 1]
    i = 0
    while pos < len(data):
        step = max(1, sizes[i % len(sizes)])
        out.append(data[pos : pos + step])
        pos += step
        i += 1
    return out
