"""The SMTP client engine delivers to a real ``nosend serve`` over a blocking socket.

The least application around the engine: a socket, ``sendall`` and ``recv`` (and
``wrap_socket`` for STARTTLS). The server is our own, run as a user would (a subprocess
on a free 127.0.0.1 port, stopped by its pid); what arrives is read back from the
Maildir or the outbound queue.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    Authenticate,
    AuthSucceeded,
    BodyChunk,
    ClientEvent,
    ConnectionClosed,
    EndOfBody,
    MessageResult,
    Quit,
    Ready,
    Recipient,
    SendBody,
    SMTPClientConfig,
    TLSHandshakeNeeded,
    Transaction,
)
from nosend_store.config import Config, load_config
from tests.runners.conftest import CertFiles, free_port, stop_process, wait_for_port
from tests.runners.session_support import DOMAIN, PASSWORDS, config_text, messages, queued


@contextmanager
def serve(tmp_path: Path, service: str, *lines: str) -> Iterator[tuple[Config, int]]:
    """``nosend serve`` with the test mail.cfg listening for ``service``; (config, port)."""
    port = free_port()
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data", *lines, ports={service: port}))
    path.chmod(0o600)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nosend", "serve", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield load_config(path), port
    finally:
        stop_process(proc)
        log.close()


CLIENT = SMTPClientConfig(local_hostname="boat.example.net")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Config, int]]:
    with serve(tmp_path, "smtp") as running:
        yield running


def deliver(
    port: int,
    outbox: list[tuple[Transaction, list[bytes]]],
    config: SMTPClientConfig = CLIENT,
    tls: ssl.SSLContext | None = None,
    auth: Authenticate | None = None,
) -> tuple[list[ClientEvent], int]:
    """Send ``outbox`` with the engine over a socket; (events, number of writes)."""
    conn = ClientConnection(config)
    queue = list(outbox)
    body: list[bytes] = []
    events = []
    writes = 0
    quit_sent = False
    pending = bytearray()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                pending += conn.data_to_send()
                if pending:
                    sock.sendall(pending)
                    pending.clear()
                    writes += 1
                conn.receive_data(sock.recv(65536))
                continue
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events, writes
            if isinstance(event, TLSHandshakeNeeded):
                assert tls is not None
                sock = tls.wrap_socket(sock, server_hostname="localhost")
                conn.start_tls_done()
                continue
            if isinstance(event, Ready) and auth is not None:
                pending += conn.send(auth)
                continue
            if isinstance(event, SendBody):
                for chunk in body:
                    pending += conn.send(BodyChunk(chunk))
                pending += conn.send(EndOfBody())
            if conn.state is ClientState.READY and queue:
                transaction, body = queue.pop(0)
                pending += conn.send(transaction)
            elif conn.state is ClientState.READY and not quit_sent:
                quit_sent = True  # pipelined after the last body when PIPELINING is on
                pending += conn.send(Quit())


def test_engine_delivers_to_nosend_serve(served: tuple[Config, int]) -> None:
    config, port = served
    alice = Recipient(f"alice@{DOMAIN}")
    first = b"Subject: one\n\n.leading dot\n..two dots\nbare CR\rend"
    second = "Subject: zwei\r\n\r\nGrüße aus Kopenhagen\r\n".encode()
    outbox = [
        (
            Transaction("skipper@boat.example", (alice,), size=len(first) + 8),
            [first[:17], first[17:]],
        ),
        (Transaction("skipper@boat.example", (alice,), eight_bit=True), [second]),
    ]
    events, writes = deliver(port, outbox)
    results = [e for e in events if isinstance(e, MessageResult)]
    assert [r.accepted for r in results] == [True, True], events
    ready = next(e for e in events if isinstance(e, Ready))
    # nosend serve offers both: EHLO, then both messages and QUIT in one write.
    assert "PIPELINING" in ready.extensions and "CHUNKING" in ready.extensions
    assert writes == 2
    stored = messages(config, "alice")
    assert len(stored) == 2
    # Disk form has LF line ends; the dots and the bare CR arrived as lines.
    assert stored[0].endswith(b"Subject: one\n\n.leading dot\n..two dots\nbare CR\nend\n")
    assert stored[1].endswith("Subject: zwei\n\nGrüße aus Kopenhagen\n".encode())


def test_starttls_auth_and_submission_to_nosend_serve(tmp_path: Path, tls_cert: CertFiles) -> None:
    lines = (f"tls_cert = {tls_cert.cert}", f"tls_key = {tls_cert.key}")
    with serve(tmp_path, "submission", *lines) as (config, port):
        client = SMTPClientConfig(local_hostname="boat.example.net", require_tls=True)
        auth = Authenticate("alice", PASSWORDS["alice"], ("PLAIN", "LOGIN"))
        outbox = [
            (
                Transaction(f"alice@{DOMAIN}", (Recipient("far@remote.example"),)),
                [b"Subject: out\n\nto the world\n"],
            )
        ]
        events, _ = deliver(port, outbox, client, tls_cert.client_context(), auth)
    ready = next(e for e in events if isinstance(e, Ready))
    assert ready.tls and "AUTH" in ready.extensions
    assert any(isinstance(e, AuthSucceeded) for e in events), events
    [result] = [e for e in events if isinstance(e, MessageResult)]
    assert result.accepted, events
    [(entry, content)] = queued(config)
    assert [r.address for r in entry.recipients] == ["far@remote.example"]
    assert content.endswith(b"Subject: out\n\nto the world\n")
    assert b"with ESMTPSA" in content  # TLS and authenticated, as the server saw it
