"""Clients that keep sending and are never answered (issue 14, "Attackers").

An endless command line, or a message body past the size limit without line ends, was
read and thrown away for ever: the timeouts count only silence. Now a bounded excess
ends the connection with a final 421 / -ERR. The tests feed more than the bound and
assert the close (no timing: the byte count decides).
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.session import wire
from nosend_runners.session.services import session_factory
from nosend_runners.testing.harness import Harness
from nosend_store.config import Config
from tests.runners.conftest import port_of, running_server
from tests.runners.session_support import LOOPBACK, make_config
from tests.runners.test_end_to_end import settings_for

pytestmark = pytest.mark.anyio

PIECE = b"A" * 65536


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)  # max_message_size = 100K


async def test_an_endless_smtp_command_line_ends_with_421(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=LOOPBACK) as h:
        assert (await h.read_reply()).code == 220
        for _ in range(wire.MAX_SILENT_INPUT // len(PIECE) + 2):
            await h.send(PIECE)
        closing = await h.read_reply()
        assert (closing.code, closing.enhanced) == (421, "4.7.0")
        assert await h.wait_closed() == b""


async def test_a_body_past_the_size_limit_without_line_ends_ends_with_421(
    config: Config,
) -> None:
    limit = config.server.max_message_size
    async with Harness(smtp_session, "smtp", config=config, peer=LOOPBACK) as h:
        assert (await h.read_reply()).code == 220
        for line in ("EHLO c", "MAIL FROM:<a@remote.example>", "RCPT TO:<alice@example.test>"):
            await h.send_line(line)
            assert (await h.read_reply()).code == 250
        await h.send_line("DATA")
        assert (await h.read_reply()).code == 354
        for _ in range((2 * limit + wire.MAX_SILENT_INPUT) // len(PIECE) + 2):
            await h.send(PIECE)
        closing = await h.read_reply()
        assert (closing.code, closing.enhanced) == (421, "4.7.0")
        assert await h.wait_closed() == b""


async def test_an_endless_pop3_command_line_ends_with_err(config: Config) -> None:
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        for _ in range(wire.MAX_SILENT_INPUT // len(PIECE) + 2):
            await h.send(PIECE)
        assert (await h.read_line()).startswith(b"-ERR ")
        assert await h.wait_closed() == b""


async def test_legitimate_pipelining_is_not_taken_for_a_flood(config: Config) -> None:
    # Far more than the bound in one burst, but every command is answered.
    burst = b"NOOP\r\n" * (wire.MAX_SILENT_INPUT // 6 + 1000)
    async with Harness(smtp_session, "smtp", config=config, peer=LOOPBACK) as h:
        assert (await h.read_reply()).code == 220
        await h.send(b"EHLO c\r\n" + burst + b"QUIT\r\n")
        await h.read_reply()
        replies = await h.read_replies(burst.count(b"\n") + 1)
        assert {r.code for r in replies} == {250, 221}


def stream_until_closed(port: int, prefix: bytes, cap: int) -> int:
    """Send ``prefix``, then 'A's without a line end until the server closes or ``cap``
    bytes went; return how many went."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.recv(4096)  # the greeting
        sock.sendall(prefix)
        try:
            while sent < cap:
                sock.sendall(PIECE)
                sent += len(PIECE)
        except OSError:
            pass  # reset or broken pipe: the server closed
        else:
            # Everything went: the server must have closed by now if it ever does.
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return sent
    return sent


@pytest.mark.parametrize("service", ["smtp", "pop3"])
async def test_a_real_server_closes_an_endless_line(tmp_path: Path, service: str) -> None:
    config = make_config(tmp_path)
    cap = 64 * 1024 * 1024
    async with running_server(settings_for(config), session_factory, config=config) as server:
        port = port_of(server, service)
        sent = await anyio.to_thread.run_sync(stream_until_closed, port, b"", cap)
    assert sent < cap
