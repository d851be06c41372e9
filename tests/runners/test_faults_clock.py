"""The wall clock jumping under the runners: login lockouts end, session timeouts do
not fire (nor stop firing) because of it. Timers and the in-process lockout measure with
``time.monotonic``; the lockout table shared by inetd processes must use wall-clock
stamps and drops the ones written before the clock went back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.shared_limits import FileAuthFailureTracker
from nosend_runners.testing.harness import Harness
from tests.runners.session_support import STRANGER, make_config, messages

T = 1_800_000_000.0
YEAR = 365 * 86400.0


class Clock:
    """A clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lock_out(tracker: AuthFailureTracker, address: str = "192.0.2.7") -> None:
    for _ in range(tracker.max_failures):
        tracker.record_failure(address)
    assert tracker.blocked(address)


def test_shared_lockout_ends_when_the_clock_goes_back(tmp_path: Path) -> None:
    clock = Clock(T)
    path = tmp_path / "state" / "auth-failures.json"
    lock_out(FileAuthFailureTracker(path, clock=clock))
    clock.now = T - YEAR
    # Another inetd process, after the jump: not locked out for a year.
    later = FileAuthFailureTracker(path, clock=clock)
    assert not later.blocked("192.0.2.7")
    # ...and a new series of failures still locks out, as it should.
    lock_out(later)
    assert FileAuthFailureTracker(path, clock=clock).blocked("192.0.2.7")


def test_shared_lockout_ends_when_the_clock_goes_forward(tmp_path: Path) -> None:
    clock = Clock(T)
    path = tmp_path / "auth-failures.json"
    lock_out(FileAuthFailureTracker(path, clock=clock, window=900.0))
    clock.now = T + YEAR
    assert not FileAuthFailureTracker(path, clock=clock).blocked("192.0.2.7")


def test_in_process_lockout_measures_with_the_monotonic_clock() -> None:
    # The server's own tracker uses time.monotonic by default, which no settimeofday,
    # NTP step or RTC reset moves: a wall-clock jump cannot lengthen its window.
    tracker = AuthFailureTracker()
    assert tracker._clock is time.monotonic


@pytest.mark.anyio
async def test_session_timeouts_ignore_the_wall_clock(tmp_path: Path) -> None:
    # A wall clock leaping a year at every reading (forwards, then backwards): had the
    # command timer used it, the session would time out (421) or never; it uses the
    # monotonic clock, so the transaction goes through and only Received:/Date: see it.
    config = make_config(tmp_path)
    jumps = iter([T + YEAR * (i % 2 * 2 - 1) for i in range(1000)])
    async with Harness(
        smtp_session, "smtp", config=config, peer=STRANGER, clock=lambda: next(jumps)
    ) as h:
        assert (await h.read_reply()).code == 220
        await h.send(b"EHLO c\r\nMAIL FROM:<s@remote.example>\r\n")
        await h.send(b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [r.code for r in await h.read_replies(4)] == [250, 250, 250, 354]
        await h.send(b"Subject: jump\r\n\r\nx\r\n.\r\nQUIT\r\n")
        assert [r.code for r in await h.read_replies(2)] == [250, 221]
    assert len(messages(config, "alice")) == 1
