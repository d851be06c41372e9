"""The POP3 client engine wired to our POP3 server engine, in memory, counting round trips.

A :class:`Link` holds a ``ClientConnection`` and the test ``Session`` (which drives a
``ServerConnection`` over a fake maildrop). ``exchange(*commands)`` writes the commands
in one go, hands the bytes to the server, feeds its answer back, and keeps going while
the client engine writes on its own (PASS, SASL responses) until every command is
answered. Each hand-over of client bytes to the server is one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nosend_proto.pop3_client import ClientConnection
from nosend_proto.pop3_client_events import (
    NEED_DATA,
    ConnectionClosed,
    MessageBegins,
    MessageComplete,
    MessageData,
    POP3ClientConfig,
    POP3ClientEvent,
    POP3Command,
)
from nosend_proto.pop3_events import POP3ServerConfig
from tests.proto.test_pop3_support import Session, config


@dataclass
class Link:
    """Client engine and server engine joined back to back."""

    client: ClientConnection
    server: Session
    round_trips: int = 0
    events: list[POP3ClientEvent] = field(default_factory=list)
    wire_to_server: list[bytes] = field(default_factory=list)
    wire_to_client: list[bytes] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def open(
        cls,
        client_config: POP3ClientConfig | None = None,
        server_config: POP3ServerConfig | None = None,
        **session: object,
    ) -> Link:
        """Connect: the server greets, the client reads the greeting."""
        server = Session.start(server_config or config(), **session)
        link = cls(ClientConnection(client_config), server)
        link.wire_to_client.append(server.greeting)
        link.client.receive_data(server.greeting)
        link.pump()
        return link

    def pump(self) -> list[POP3ClientEvent]:
        """Collect the client's events until it needs data; return them."""
        got: list[POP3ClientEvent] = []
        while not self.closed:
            event = self.client.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            got.append(event)
            if isinstance(event, ConnectionClosed):
                self.closed = True
        self.events += got
        return got

    def exchange(self, *commands: POP3Command) -> list[POP3ClientEvent]:
        """Write ``commands`` in one write; run until all are answered; return events."""
        out = b"".join(self.client.send(command) for command in commands)
        got: list[POP3ClientEvent] = []
        while out:
            self.round_trips += 1
            self.wire_to_server.append(out)
            reply = self.server.feed(out)
            self.wire_to_client.append(reply)
            if reply:
                self.client.receive_data(reply)
            got += self.pump()
            out = self.client.data_to_send()
        got += self.pump()
        return got

    def one_by_one(self, *commands: POP3Command) -> list[POP3ClientEvent]:
        """Each command in its own round trip (no pipelining)."""
        got: list[POP3ClientEvent] = []
        for command in commands:
            got += self.exchange(command)
        return got


def bodies(events: list[POP3ClientEvent]) -> list[bytes]:
    """The messages streamed in ``events``, each joined from its MessageData pieces."""
    out: list[bytes] = []
    current: list[bytes] | None = None
    for event in events:
        if isinstance(event, MessageBegins):
            current = []
        elif isinstance(event, MessageData):
            assert current is not None
            current.append(event.data)
        elif isinstance(event, MessageComplete):
            assert current is not None
            out.append(b"".join(current))
            current = None
    assert current is None, "a message began and never completed"
    return out
