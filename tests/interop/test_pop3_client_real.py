"""The POP3 client engine over a real socket, against a real server process.

``nosend serve`` (started by the interop fixtures on 127.0.0.1) is driven through a
plain blocking socket: log in, UIDL, RETR everything pipelined, DELE everything and
QUIT, and the Maildir must be empty afterwards. A second run goes through STLS with
``require_tls`` and AUTH PLAIN, checking the engine's TLS hand-over on a real socket.
Dovecot (the Debian package), run unprivileged from a throw-away configuration, is the
independent server: every login method, then the same fetch-and-delete.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from nosend_proto.pop3_client import ClientConnection
from nosend_proto.pop3_client_events import (
    NEED_DATA,
    Apop,
    Auth,
    Capa,
    CapabilitiesReceived,
    CommandOK,
    ConnectionClosed,
    Dele,
    Greeting,
    LoggedIn,
    LoginFailed,
    POP3ClientConfig,
    POP3ClientEvent,
    POP3Command,
    Quit,
    Retr,
    SignedOff,
    Stat,
    StatReply,
    Stls,
    StlsAccepted,
    Uidl,
    UidlReply,
    UserPass,
)
from tests.interop.conftest import SAMPLE_MESSAGES, NosendServer, ServerFactory
from tests.interop.dovecot_fixture import (  # noqa: F401 -- fixtures
    DOVECOT_PASSWORD,
    DovecotServer,
    dovecot_server,
)
from tests.proto.pop3_client_driver import bodies

pytestmark = pytest.mark.interop


class BlockingClient:
    """The engine on a blocking socket: write commands, read until all are answered."""

    def __init__(self, address: tuple[str, int], config: POP3ClientConfig | None = None) -> None:
        self.sock: socket.socket = socket.create_connection(address, timeout=20)
        self.conn = ClientConnection(config)
        self.writes = 0

    def close(self) -> None:
        self.sock.close()

    def run(self, *commands: POP3Command) -> list[POP3ClientEvent]:
        """Send ``commands`` in one write; return the events until all are answered."""
        out = b"".join(self.conn.send(command) for command in commands)
        if out:
            self.sock.sendall(out)
            self.writes += 1
        events: list[POP3ClientEvent] = []
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                more = self.conn.data_to_send()  # PASS, SASL responses
                if more:
                    self.sock.sendall(more)
                    self.writes += 1
                if self.conn.outstanding == 0:
                    return events
                self.conn.receive_data(self.sock.recv(65536))
                continue
            assert not isinstance(event, type(NEED_DATA))
            events.append(event)
            if isinstance(event, StlsAccepted | ConnectionClosed):
                return events

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.conn.start_tls_done()


@pytest.fixture
def pop3_server(nosend_factory: ServerFactory) -> NosendServer:
    return nosend_factory(services=("pop3",))


def as_retrieved(message: bytes) -> bytes:
    """A sample message (LF line ends) as RETR delivers it once unstuffed."""
    return message.replace(b"\n", b"\r\n")


def test_fetch_and_delete_everything_from_nosend_serve(pop3_server: NosendServer) -> None:
    for message in SAMPLE_MESSAGES:
        pop3_server.deliver_directly("alice", message)
    client = BlockingClient(pop3_server.address("pop3"))
    try:
        (greeting,) = client.run()
        assert isinstance(greeting, Greeting)
        (caps,) = client.run(Capa())
        assert isinstance(caps, CapabilitiesReceived) and caps.capabilities.pipelining
        (login,) = client.run(UserPass("alice", pop3_server.users["alice"]))
        assert isinstance(login, LoggedIn), login
        (listing,) = client.run(Uidl())
        assert isinstance(listing, UidlReply) and len(listing.entries) == len(SAMPLE_MESSAGES)
        before = client.writes
        got = bodies(client.run(*(Retr(e.msgno) for e in listing.entries)))
        assert sorted(got) == sorted(as_retrieved(m) for m in SAMPLE_MESSAGES)
        events = client.run(*(Dele(e.msgno) for e in listing.entries), Quit())
        assert client.writes - before == 2  # pipelined: every RETR, then DELEs and QUIT
        assert all(isinstance(e, CommandOK) for e in events[: len(listing.entries)])
        signed_off = events[len(listing.entries)]
        assert isinstance(signed_off, SignedOff) and signed_off.ok and signed_off.updated
    finally:
        client.close()
    assert pop3_server.messages("alice") == []


def test_stls_then_auth_plain_with_require_tls(nosend_factory: ServerFactory) -> None:
    server = nosend_factory(services=("pop3",), tls=True)
    assert server.tls is not None
    server.deliver_directly("bob", SAMPLE_MESSAGES[1])
    client = BlockingClient(server.address("pop3"), POP3ClientConfig(require_tls=True))
    try:
        client.run()
        (refused,) = client.run(Auth("PLAIN", "bob", server.users["bob"]))
        assert isinstance(refused, LoginFailed) and refused.tls_required
        (caps,) = client.run(Capa())
        assert isinstance(caps, CapabilitiesReceived) and caps.capabilities.stls
        (accepted,) = client.run(Stls())
        assert isinstance(accepted, StlsAccepted)
        client.start_tls(server.tls.client_context())
        (caps,) = client.run(Capa())
        assert isinstance(caps, CapabilitiesReceived) and not caps.capabilities.stls
        (login,) = client.run(Auth("PLAIN", "bob", server.users["bob"]))
        assert isinstance(login, LoggedIn), login
        (stat,) = client.run(Stat())
        assert isinstance(stat, StatReply) and stat.count == 1
        assert bodies(client.run(Retr(1))) == [as_retrieved(SAMPLE_MESSAGES[1])]
        signed_off, closed = client.run(Quit())
        assert isinstance(signed_off, SignedOff) and signed_off.ok
        assert closed == ConnectionClosed(expected=True)
    finally:
        client.close()
    assert len(server.messages("bob")) == 1  # nothing was marked deleted


# --- Dovecot (tests/interop/dovecot_fixture.py) -----------------------------------


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> tuple[int, Path]:  # noqa: F811
    """(the POP3 port, the Maildir root) of a running Dovecot."""
    return dovecot_server.port, dovecot_server.mail


def test_every_login_then_fetch_and_delete_from_dovecot(dovecot: tuple[int, Path]) -> None:
    port, mail = dovecot
    for command in (
        UserPass("alice", DOVECOT_PASSWORD),
        Apop("alice", DOVECOT_PASSWORD),
        Auth("PLAIN", "alice", DOVECOT_PASSWORD),
        Auth("LOGIN", "alice", DOVECOT_PASSWORD),
        Auth("CRAM-MD5", "alice", DOVECOT_PASSWORD),
    ):
        client = BlockingClient(("127.0.0.1", port))
        try:
            (greeting,) = client.run()
            assert isinstance(greeting, Greeting) and greeting.timestamp  # APOP offered
            (login,) = client.run(command)
            assert isinstance(login, LoggedIn), (command, login)
            signed_off, _ = client.run(Quit())
            assert isinstance(signed_off, SignedOff) and signed_off.ok
        finally:
            client.close()
    (failed,) = _login_once(port, UserPass("alice", "wrong"))
    assert isinstance(failed, LoginFailed) and failed.code == "AUTH"

    client = BlockingClient(("127.0.0.1", port))
    try:
        client.run()
        (caps,) = client.run(Capa())
        assert isinstance(caps, CapabilitiesReceived) and caps.capabilities.pipelining
        assert "CRAM-MD5" in caps.capabilities.sasl
        client.run(UserPass("alice", DOVECOT_PASSWORD))
        (listing,) = client.run(Uidl())
        assert isinstance(listing, UidlReply) and len(listing.entries) == len(SAMPLE_MESSAGES)
        before = client.writes
        got = bodies(client.run(*(Retr(e.msgno) for e in listing.entries)))
        assert sorted(got) == sorted(as_retrieved(m) for m in SAMPLE_MESSAGES)
        events = client.run(*(Dele(e.msgno) for e in listing.entries), Quit())
        assert client.writes - before == 2
        signed_off = events[len(listing.entries)]
        assert isinstance(signed_off, SignedOff) and signed_off.ok and signed_off.updated
    finally:
        client.close()
    left = [p for sub in ("new", "cur") for p in (mail / "alice" / sub).iterdir()]
    assert left == []


def _login_once(port: int, command: POP3Command) -> list[POP3ClientEvent]:
    client = BlockingClient(("127.0.0.1", port))
    try:
        client.run()
        return client.run(command)
    finally:
        client.close()
