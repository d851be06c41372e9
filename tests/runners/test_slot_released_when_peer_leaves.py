"""A client that leaves during the delay after a failed login does not keep its
session, or its connection slot, for the rest of the delay (issue 13)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.session.services import session_factory
from nosend_runners.testing.harness import Harness, harness_state
from tests.runners.conftest import port_of, running_server
from tests.runners.session_support import LOOPBACK, make_config
from tests.runners.test_end_to_end import settings_for

pytestmark = pytest.mark.anyio

#: A failure delay no test would sit out: a session still in it has not noticed.
LONG = 3600.0


def slow_tracker(address: str) -> AuthFailureTracker:
    """A tracker whose next failure from ``address`` waits ``LONG`` (the delay doubles
    per failure: 12 already there)."""
    tracker = AuthFailureTracker(max_failures=20, window=900.0, max_delay=LONG)
    for _ in range(12):
        tracker.record_failure(address)
    return tracker


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_smtp_session_ends_when_the_client_leaves_during_the_delay(
    tmp_path: Path,
) -> None:
    state = harness_state(make_config(tmp_path), auth_failures=slow_tracker(LOOPBACK.address))
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        assert (await h.read_reply()).code == 220
        await h.send_line("EHLO c")
        assert (await h.read_reply()).code == 250
        await h.send_line("AUTH PLAIN " + plain("alice", "guess"))
        await h.close()  # gone before the answer
        await h.wait_closed()
        assert h.session_done


async def test_pop3_session_ends_when_the_client_leaves_during_the_delay(
    tmp_path: Path,
) -> None:
    state = harness_state(make_config(tmp_path), auth_failures=slow_tracker(LOOPBACK.address))
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        await h.send(b"USER alice\r\n")
        assert (await h.read_line()).startswith(b"+OK")
        await h.send(b"PASS guess\r\n")
        await h.close()
        await h.wait_closed()
        assert h.session_done


async def test_commands_sent_during_the_delay_are_still_answered(tmp_path: Path) -> None:
    state = harness_state(
        make_config(tmp_path), auth_failures=AuthFailureTracker(5, 900.0, max_delay=0.2)
    )
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        assert (await h.read_reply()).code == 220
        await h.send_line("EHLO c")
        assert (await h.read_reply()).code == 250
        await h.send(f"AUTH PLAIN {plain('alice', 'guess')}\r\n".encode())
        await anyio.sleep(0.05)  # inside the delay
        await h.send(b"NOOP\r\nQUIT\r\n")
        assert [r.code for r in await h.read_replies(3)] == [535, 250, 221]


def guess_and_leave(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"USER alice\r\n")
        sock.recv(4096)
        sock.sendall(b"PASS guess\r\n")


async def test_the_slot_comes_back_while_the_delay_would_still_run(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(settings_for(config), session_factory, config=config) as server:
        server.state.auth_failures = slow_tracker("127.0.0.1")
        await anyio.to_thread.run_sync(guess_and_leave, port_of(server, "pop3"))
        with anyio.fail_after(10):
            while server.connections.total:
                await anyio.sleep(0.02)
