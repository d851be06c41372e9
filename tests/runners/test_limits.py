"""Connection limits (overall, per address) and the auth-failure tracker."""

from __future__ import annotations

import anyio
import pytest

from nosend_runners.serve.limits import AuthFailureTracker, ConnectionLimiter, LimitSettings
from tests.runners.conftest import (
    CertFiles,
    LineClient,
    echo_settings,
    port_of,
    running_server,
)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("service", "refusal"),
    [
        ("smtp", b"421 4.7.0 Too many connections, try again later"),
        ("pop3", b"-ERR [SYS/TEMP] too many connections, try again later"),
    ],
)
async def test_over_the_per_address_limit_is_refused_and_closed(
    service: str, refusal: bytes
) -> None:
    settings = echo_settings(service, limits=LimitSettings(max_per_address=2))
    async with running_server(settings) as server:
        port = port_of(server, service)
        first, second = await LineClient.connect(port), await LineClient.connect(port)
        assert (await first.line()).startswith(b"220 ")
        assert (await second.line()).startswith(b"220 ")
        third = await LineClient.connect(port)
        assert await third.line() == refusal
        assert await third.closed()
        await third.aclose()
        # A slot frees when a session ends.
        assert await first.command(b"QUIT") == b"221 bye"
        await first.aclose()
        with anyio.fail_after(5):
            while server.connections.total > 1:
                await anyio.sleep(0.02)
        fourth = await LineClient.connect(port)
        assert (await fourth.line()).startswith(b"220 ")
        await fourth.aclose(), await second.aclose()


@pytest.mark.anyio
async def test_overall_limit_counts_every_service() -> None:
    settings = echo_settings("smtp", "pop3", limits=LimitSettings(max_connections=1))
    async with running_server(settings) as server:
        smtp = await LineClient.connect(port_of(server, "smtp"))
        assert (await smtp.line()).startswith(b"220 ")
        pop3 = await LineClient.connect(port_of(server, "pop3"))
        assert (await pop3.line()).startswith(b"-ERR [SYS/TEMP]")
        await pop3.aclose(), await smtp.aclose()


@pytest.mark.anyio
async def test_refusal_on_implicit_tls_is_sent_inside_tls(tls_cert: CertFiles) -> None:
    settings = echo_settings(
        "pop3s",
        limits=LimitSettings(max_per_address=1),
        tls_cert=tls_cert.cert,
        tls_key=tls_cert.key,
    )
    async with running_server(settings) as server:
        port = port_of(server, "pop3s")
        first = await LineClient.connect(port)
        await first.start_tls(tls_cert.client_context())
        assert (await first.line()).startswith(b"220 ")
        second = await LineClient.connect(port)
        await second.start_tls(tls_cert.client_context())
        assert (await second.line()).startswith(b"-ERR [SYS/TEMP] too many connections")
        await second.aclose(), await first.aclose()


def test_connection_limiter_counts_per_address_and_overall() -> None:
    limiter = ConnectionLimiter(max_total=3, max_per_address=2)
    assert limiter.try_acquire("smtp", "a") and limiter.try_acquire("smtp", "a")
    assert not limiter.try_acquire("smtp", "a")
    assert limiter.try_acquire("smtp", "b")
    assert not limiter.try_acquire("smtp", "c")  # overall limit
    limiter.release("smtp", "a")
    assert limiter.count("smtp", "a") == 1 and limiter.total == 2
    assert limiter.try_acquire("smtp", "c")
    for address in ("a", "b", "c"):
        limiter.release("smtp", address)
    assert limiter.total == 0 and limiter.count("smtp", "a") == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_auth_failures_block_an_address_within_the_window_only() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(max_failures=3, window=60, max_delay=4, clock=clock)
    assert tracker.failure_delay("10.0.0.1") == 0.0
    for expected_delay in (0.5, 1.0, 2.0):
        assert not tracker.blocked("10.0.0.1")
        tracker.record_failure("10.0.0.1")
        assert tracker.failure_delay("10.0.0.1") == expected_delay
    assert tracker.blocked("10.0.0.1")
    assert not tracker.blocked("10.0.0.2")  # per address
    tracker.record_failure("10.0.0.1")
    assert tracker.failure_delay("10.0.0.1") == 2.0  # bounded history, bounded delay
    clock.now += 61
    assert not tracker.blocked("10.0.0.1") and tracker.failures("10.0.0.1") == 0


def test_auth_success_clears_the_address_and_delay_is_capped() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(max_failures=10, window=600, max_delay=3, clock=clock)
    for _ in range(8):
        tracker.record_failure("192.0.2.1")
    assert tracker.failure_delay("192.0.2.1") == 3.0
    tracker.record_success("192.0.2.1")
    assert tracker.failures("192.0.2.1") == 0 and not tracker.blocked("192.0.2.1")


class CountingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_auth_tracker_memory_is_bounded_with_many_source_addresses() -> None:
    # Audit: a guesser rotating through an IPv6 prefix used to grow the table without
    # bound inside the window, and every failure past 10 000 addresses rescanned it all.
    clock = CountingClock()
    tracker = AuthFailureTracker(max_failures=3, window=900, clock=clock, max_addresses=200)
    for i in range(5000):
        tracker.record_failure(f"2001:db8::{i:x}")
    assert tracker.tracked <= 200
    # Amortised: a bounded number of clock reads per failure, not one per stored address.
    assert clock.calls < 20 * 5000
    # The newest guessers are still remembered and still counted.
    for _ in range(2):
        tracker.record_failure("2001:db8::1387")
    assert tracker.blocked("2001:db8::1387")


def test_auth_tracker_keeps_a_locked_out_address_while_the_table_has_room() -> None:
    clock = FakeClock()
    tracker = AuthFailureTracker(max_failures=2, window=900, clock=clock, max_addresses=50)
    tracker.record_failure("192.0.2.7")
    tracker.record_failure("192.0.2.7")
    for i in range(60):
        clock.now += 0.001
        tracker.record_failure(f"198.51.100.{i}")
        if i < 40:
            assert tracker.blocked("192.0.2.7")
    assert tracker.tracked <= 50


def test_record_failure_returns_the_count_that_blocked_and_the_delay_follow() -> None:
    # Sessions take the count from record_failure rather than asking again (under inetd
    # each question re-reads the shared table).
    tracker = AuthFailureTracker(max_failures=3, window=60, max_delay=8)
    counts = [tracker.record_failure("192.0.2.9") for _ in range(5)]
    assert counts == [1, 2, 3, 3, 3]  # only the newest max_failures stamps are kept
    assert tracker.blocked("192.0.2.9")
    assert tracker.delay_for(counts[1]) == 1.0 and tracker.delay_for(0) == 0.0
    assert tracker.failure_delay("192.0.2.9") == tracker.delay_for(tracker.failures("192.0.2.9"))
