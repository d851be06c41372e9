"""A client trickling one byte at a time is closed at the command timeout (slowloris).

The timeouts of RFC 5321 section 4.5.3.2.7 and RFC 1939 section 3 cover a whole command,
not each read: otherwise a byte every few seconds holds a connection slot (and for POP3
the mailbox lock) for ever. A client that keeps issuing complete commands is not cut off.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.testing.harness import Harness, harness_state
from nosend_store.config import Config
from tests.runners.session_support import LOOPBACK, STRANGER, make_config

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


async def drip(h: Harness, data: bytes, gap: float) -> bool:
    """Send ``data`` a byte at a time; True if the server closed before the end."""
    for byte in data:
        try:
            await h.send(bytes([byte]))
        except Exception:  # the server closed the connection under us
            return True
        await anyio.sleep(gap)
    return False


async def test_smtp_trickled_command_is_cut_off_at_the_command_timeout(config: Config) -> None:
    state = harness_state(config)
    state.timeouts = type(state.timeouts)(command=TIMEOUT)
    async with Harness(smtp_session, "smtp", state=state, peer=STRANGER) as h:
        assert (await h.read_reply()).code == 220
        with anyio.fail_after(5):
            # 40 bytes at one per 0.05 s take 2 s: four times the command timeout,
            # although no single read ever waits as long as the timeout. The server
            # closes before the last byte (no stopwatch: drip() notices the close).
            cut_off = await drip(h, b"EHLO a-very-slow-client.example.org\r\n", 0.05)
            reply = await h.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert cut_off


async def test_smtp_client_sending_whole_commands_is_not_cut_off(config: Config) -> None:
    state = harness_state(config)
    state.timeouts = type(state.timeouts)(command=TIMEOUT)
    async with Harness(smtp_session, "smtp", state=state, peer=STRANGER) as h:
        assert (await h.read_reply()).code == 220
        for _ in range(6):  # 6 x 0.2 s: longer than the timeout in all
            await h.send(b"NOOP\r\n")
            assert (await h.read_reply()).code == 250
            await anyio.sleep(0.2)
        await h.send(b"QUIT\r\n")
        assert (await h.read_reply()).code == 221


async def test_pop3_trickled_command_is_cut_off_and_capa_polling_is_not(config: Config) -> None:
    state = harness_state(config)
    state.timeouts = type(state.timeouts)(pop3_idle=TIMEOUT)
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        for _ in range(6):  # answered by the engine itself, no event: still activity
            await h.send_line("CAPA")
            assert (await h.read_line()).startswith(b"+OK")
            await h.read_multiline()
            await anyio.sleep(0.2)
        with anyio.fail_after(5):
            await drip(h, b"USER someone-with-a-long-name\r\n", 0.05)
            line = await h.read_line()
        assert line.startswith(b"-ERR [SYS/TEMP]")
