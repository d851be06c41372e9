"""Connection limits that one client cannot turn against the others (issues 13 and 14).

Counted per service and per client (an IPv6 /64 is one client), with a share of the pool
kept for each service and for trusted networks; defaults like Postfix's.
"""

from __future__ import annotations

import anyio
import pytest

from nosend_runners.serve.limits import ConnectionLimiter, LimitSettings, client_key
from tests.runners.conftest import LineClient, echo_settings, port_of, running_server


def test_defaults_are_postfix_like() -> None:
    # Postfix: smtpd_client_connection_count_limit = 50.
    assert LimitSettings().max_per_address == 50


def test_each_service_counts_its_own_connections_per_client() -> None:
    limiter = ConnectionLimiter(max_total=100, max_per_address=2)
    assert limiter.try_acquire("smtp", "192.0.2.1") and limiter.try_acquire("smtp", "192.0.2.1")
    assert not limiter.try_acquire("smtp", "192.0.2.1")
    # The same host's mailbox check is not held against it.
    assert limiter.try_acquire("pop3", "192.0.2.1") and limiter.try_acquire("pop3", "192.0.2.1")
    limiter.release("smtp", "192.0.2.1")
    assert limiter.count("smtp", "192.0.2.1") == 1 and limiter.count("pop3", "192.0.2.1") == 2
    assert limiter.try_acquire("smtp", "192.0.2.1")


def test_ipv6_peers_are_one_client_per_64() -> None:
    assert (
        client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("unknown") == "unknown"
    limiter = ConnectionLimiter(max_total=100, max_per_address=3)
    for i in range(3):
        assert limiter.try_acquire("smtp", f"2001:db8:1:2::{i + 1:x}")
    assert not limiter.try_acquire("smtp", "2001:db8:1:2:abcd::1")
    assert limiter.try_acquire("smtp", "2001:db8:1:3::1")  # the next /64 is someone else


def test_a_few_clients_cannot_take_every_slot_of_every_service() -> None:
    trusted = {"10.0.0.5"}
    limiter = ConnectionLimiter(
        max_total=20,
        max_per_address=20,
        services=("smtp", "pop3"),
        service_reserve=4,
        trusted_reserve=3,
        trusted=trusted.__contains__,
    )
    admitted = sum(
        limiter.try_acquire("smtp", f"198.51.100.{a}") for a in range(5) for _ in range(20)
    )
    # SMTP's own 4 plus the shared 12 less the 3 kept for trusted clients.
    assert admitted == 4 + (20 - 2 * 4 - 3)
    # POP3 still has its share, and a trusted client the rest.
    assert sum(limiter.try_acquire("pop3", "198.51.100.9") for _ in range(10)) == 4
    assert sum(limiter.try_acquire("smtp", "10.0.0.5") for _ in range(10)) == 3
    assert limiter.total == 20
    limiter.release("smtp", "198.51.100.0")
    assert limiter.try_acquire("smtp", "198.51.100.0")


def test_trusted_clients_are_exempt_from_the_per_client_cap() -> None:
    limiter = ConnectionLimiter(
        max_total=100, max_per_address=2, trusted=lambda a: a.startswith("10.")
    )
    assert all(limiter.try_acquire("smtp", "10.0.0.1") for _ in range(10))
    assert sum(limiter.try_acquire("smtp", "192.0.2.1") for _ in range(10)) == 2


@pytest.mark.anyio
async def test_twenty_smtp_sessions_while_the_mailbox_is_open_are_all_served() -> None:
    """The issue-13 report: one host checking its POP3 mailbox while it sends 20
    messages, with the default limits, got 421 Too many connections."""
    settings = echo_settings("smtp", "pop3")  # default LimitSettings
    async with running_server(settings) as server:
        pop3 = await LineClient.connect(port_of(server, "pop3"))
        assert (await pop3.line()).startswith(b"220 ")
        clients = []
        for _ in range(20):
            client = await LineClient.connect(port_of(server, "smtp"))
            assert (await client.line()).startswith(b"220 ")
            clients.append(client)
        for client in clients:
            await client.aclose()
        await pop3.aclose()
        with anyio.fail_after(5):
            while server.connections.total:
                await anyio.sleep(0.02)
