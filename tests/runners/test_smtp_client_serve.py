"""The SMTP client engine delivers to a real ``nosend serve`` over a blocking socket.

The least application around the engine: a socket, ``sendall`` and ``recv``. The server
is our own, run as a user would (a subprocess on a free 127.0.0.1 port, stopped by its
pid); what arrives is read back from the Maildir.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_proto.smtp_client import ClientConnection, ClientState
from nosend_proto.smtp_client_events import (
    NEED_DATA,
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    MessageResult,
    Quit,
    Ready,
    Recipient,
    SendBody,
    SMTPClientConfig,
    Transaction,
)
from nosend_store.config import Config, load_config
from tests.runners.conftest import free_port, stop_process, wait_for_port
from tests.runners.session_support import DOMAIN, config_text, messages


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Config, int]]:
    """``nosend serve`` with the test mail.cfg and an SMTP listener; (config, port)."""
    port = free_port()
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "data", ports={"smtp": port}))
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


def deliver(port: int, outbox: list[tuple[Transaction, list[bytes]]]) -> tuple[list, int]:
    """Send ``outbox`` with the engine over a socket; (events, number of writes)."""
    conn = ClientConnection(SMTPClientConfig(local_hostname="boat.example.net"))
    queue = list(outbox)
    body: list[bytes] = []
    events = []
    writes = 0
    quit_sent = False
    pending = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
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
