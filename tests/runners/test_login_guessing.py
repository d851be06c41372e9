"""Password guessing against the login guard (issue 14, "Attackers").

Parallel guesses are counted before any of them is checked; a successful login clears
only its own user name's failures; an IPv6 /64 is one client; inetd's shared table
counts under its lock.
"""

from __future__ import annotations

import base64
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from nosend_proto import Credentials
from nosend_runners.mail import policy
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.shared_limits import FileAuthFailureTracker
from nosend_runners.session.boundary import PeerInfo
from nosend_runners.testing.harness import Harness, harness_state
from nosend_store.config import Config
from tests.runners.session_support import LOOPBACK, PASSWORDS, make_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def ehlo(h: Harness) -> None:
    assert (await h.read_reply()).code == 220
    await h.send_line("EHLO client.example")
    assert (await h.read_reply()).code == 250


async def test_parallel_guesses_get_no_more_checks_than_the_limit(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """19 connections from one address send AUTH PLAIN at once: 5 checks, not 19."""
    checks: list[str] = []
    real = policy.authenticate

    def slow_authenticate(cfg: Config, credentials: Credentials) -> str | None:
        checks.append(credentials.username)
        time.sleep(0.2)  # a slow hash: every guess arrives while the first is checked
        return real(cfg, credentials)

    monkeypatch.setattr(policy, "authenticate", slow_authenticate)
    state = harness_state(config, auth_failures=AuthFailureTracker(5, 900.0, 0.01))
    codes: list[int] = []

    async def guess(h: Harness) -> None:
        await h.send_line("AUTH PLAIN " + plain("alice", "guess"))
        codes.append((await h.read_reply()).code)

    async with AsyncExitStack() as stack:
        sessions = []
        for _ in range(19):
            h = Harness(smtp_session, "submission", state=state, peer=LOOPBACK)
            sessions.append(await stack.enter_async_context(h))
            await ehlo(h)
        async with anyio.create_task_group() as tg:
            for h in sessions:
                tg.start_soon(guess, h)
    assert len(checks) == 5
    assert sorted(codes) == [421] * 14 + [535] * 5


async def test_a_login_of_ones_own_does_not_reset_guessing_at_others(config: Config) -> None:
    """4 wrong guesses for alice, then bob's right login, repeated: the 5th guess
    locks the address out."""
    state = harness_state(config)
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        for _ in range(4):
            await h.send_line("AUTH PLAIN " + plain("alice", "guess"))
            assert (await h.read_reply()).code == 535
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("bob", PASSWORDS["bob"]))
        assert (await h.read_reply()).code == 235  # bob gets in...
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("alice", "guess"))
        assert (await h.read_reply()).code == 535
        # ...but his login did not give the address back its guesses at alice.
        closing = await h.read_reply(timeout=3)
        assert (closing.code, closing.enhanced) == (421, "4.7.0")


def test_success_clears_only_the_users_own_failures() -> None:
    tracker = AuthFailureTracker(max_failures=5)
    for _ in range(3):
        tracker.record_failure("192.0.2.7", "alice")
    tracker.record_failure("192.0.2.7", "bob")
    tracker.record_success("192.0.2.7", "bob")
    assert tracker.failures("192.0.2.7") == 3
    tracker.record_success("192.0.2.7", "Alice")  # names are compared in lower case
    assert tracker.failures("192.0.2.7") == 0


def test_admission_counts_attempts_in_flight() -> None:
    tracker = AuthFailureTracker(max_failures=2)
    first, second = tracker.admit("192.0.2.7", "a"), tracker.admit("192.0.2.7", "a")
    assert first.admitted and second.admitted
    third = tracker.admit("192.0.2.7", "a")
    assert not third.admitted and third.retry  # the first two decide
    tracker.succeed("192.0.2.7", first.ticket, "a")
    fourth = tracker.admit("192.0.2.7", "a")
    assert fourth.admitted
    assert tracker.fail("192.0.2.7", second.ticket) == 1
    assert tracker.fail("192.0.2.7", fourth.ticket) == 2
    locked = tracker.admit("192.0.2.7", "a")
    assert not locked.admitted and not locked.retry


def test_an_ipv6_64_is_one_client_for_the_lockout() -> None:
    tracker = AuthFailureTracker(max_failures=3)
    for i in range(3):
        tracker.record_failure(f"2001:db8:5:6::{i + 1:x}", "alice")
    assert tracker.blocked("2001:db8:5:6:dead:beef::1")
    assert not tracker.blocked("2001:db8:5:7::1")


def test_inetd_processes_count_admissions_under_the_lock(tmp_path: Path) -> None:
    """Parallel admissions through separate shared trackers (as separate inetd
    processes): no more than the limit get through."""
    path = tmp_path / "state" / "auth-failures.json"
    admitted: list[bool] = []
    start = threading.Barrier(12)

    def one() -> None:
        tracker = FileAuthFailureTracker(path, max_failures=3)
        start.wait()
        admitted.append(tracker.admit("192.0.2.7", "alice").admitted)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 3
    assert FileAuthFailureTracker(path, max_failures=3).admit("192.0.2.7", "x").retry


async def test_peer_info_for_ipv6_sessions_share_one_budget(tmp_path: Path) -> None:
    config = make_config(tmp_path, "auth_requires_tls = no")
    state = harness_state(config, auth_failures=AuthFailureTracker(2, 900.0, 0.01))
    for i in range(2):
        peer = PeerInfo(f"2001:db8::{i + 1}", 4000)
        async with Harness(smtp_session, "submission", state=state, peer=peer) as h:
            await ehlo(h)
            await h.send_line("AUTH PLAIN " + plain("alice", "guess"))
            assert (await h.read_reply()).code == 535
    async with Harness(smtp_session, "submission", state=state, peer=PeerInfo("2001:db8::99")) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]))
        assert (await h.read_reply()).code == 421
