"""Hostile POP3 peers against a real ``nosend serve`` (raw sockets, no client library).

Each test starts its own server (fixtures from ``tests/interop/conftest.py``) so that the
per-address authentication-failure tracker starts empty.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.interop.conftest import (  # noqa: F401 - fixtures used by name
    SAMPLE_MESSAGES,
    NosendServer,
    RawPeer,
    ServerFactory,
    nosend_factory,
    tls_files,
)

POP3 = ("pop3", "pop3s")


def login(peer: RawPeer, server: NosendServer, user: str = "alice") -> None:
    assert peer.line().startswith(b"+OK")
    assert peer.pop3(f"USER {user}").startswith(b"+OK")
    assert peer.pop3(f"PASS {server.users[user]}").startswith(b"+OK")


@pytest.fixture
def lan_server(nosend_factory: ServerFactory) -> NosendServer:  # noqa: F811
    return nosend_factory(services=POP3, lan_plaintext_auth="yes")


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """For the tests where cancellation semantics matter: both event loops."""
    return str(request.param)


def test_dele_without_quit_deletes_nothing(
    nosend_factory: ServerFactory,  # noqa: F811
    backend: str,
) -> None:
    lan_server = nosend_factory(services=POP3, lan_plaintext_auth="yes", backend=backend)
    for message in SAMPLE_MESSAGES:
        lan_server.deliver_directly("alice", message)
    with RawPeer(lan_server.address("pop3")) as peer:
        login(peer, lan_server)
        for number in range(1, len(SAMPLE_MESSAGES) + 1):
            assert peer.pop3(f"DELE {number}").startswith(b"+OK")
        assert peer.pop3("STAT").startswith(b"+OK 0 ")  # deleted in this session's view
        # ...and the connection drops without QUIT (RFC 1939 section 6: no UPDATE).
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    # Not a sleep: until the server has seen the reset, the maildrop is still locked.
    lan_server.wait_until_sessions_end()
    assert len(lan_server.messages("alice")) == len(SAMPLE_MESSAGES)
    # The lock is released: a new session sees every message and can delete for real.
    with RawPeer(lan_server.address("pop3")) as peer:
        login(peer, lan_server)
        assert peer.pop3("STAT").startswith(b"+OK %d " % len(SAMPLE_MESSAGES))
        assert peer.pop3("DELE 1").startswith(b"+OK")
        assert peer.pop3("QUIT").startswith(b"+OK")
    assert len(lan_server.messages("alice")) == len(SAMPLE_MESSAGES) - 1


def test_commands_pipelined_after_stls_are_discarded(
    nosend_factory: ServerFactory,  # noqa: F811
    backend: str,
) -> None:
    server = nosend_factory(services=POP3, backend=backend)
    server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    assert server.tls is not None
    with RawPeer(server.address("pop3")) as peer:
        assert peer.line().startswith(b"+OK")
        # RFC 2595 section 4 / the STARTTLS injection attack: the USER/PASS sent in
        # cleartext in the same packet as STLS must not be acted on inside TLS.
        peer.send(b"STLS\r\nUSER alice\r\nPASS " + server.users["alice"].encode() + b"\r\nSTAT\r\n")
        assert peer.line().startswith(b"+OK")
        peer.start_tls(server.tls.client_context())
        reply = peer.pop3("STAT")
        assert reply.startswith(b"-ERR"), reply  # not logged in: the injection was dropped
        assert peer.pop3("USER alice").startswith(b"+OK")
        assert peer.pop3(f"PASS {server.users['alice']}").startswith(b"+OK")
        assert peer.pop3("STAT").startswith(b"+OK 1 ")


def test_client_that_sends_nothing_is_closed_at_the_timeout(
    nosend_factory: ServerFactory,  # noqa: F811
    backend: str,
) -> None:
    server = nosend_factory(services=POP3, pop3_timeout="1s", backend=backend)
    # Taken before connecting: the server's timer starts after the accept, so this
    # bound holds however late this process sees the greeting.
    start = time.monotonic()
    with RawPeer(server.address("pop3")) as peer:
        assert peer.line().startswith(b"+OK")
        closed, said = peer.closed_within(8)
        assert closed, said
        assert time.monotonic() - start >= 0.9
        assert said.startswith(b"-ERR"), said


def test_overlong_command_line_is_an_error_not_a_crash(lan_server: NosendServer) -> None:
    with RawPeer(lan_server.address("pop3")) as peer:
        assert peer.line().startswith(b"+OK")
        peer.send(b"USER " + b"a" * 100_000 + b"\r\n")
        assert peer.line().startswith(b"-ERR")
        login_ok = peer.pop3("USER alice")
        assert login_ok.startswith(b"+OK"), login_ok  # the session carries on
        assert peer.pop3(f"PASS {lan_server.users['alice']}").startswith(b"+OK")
        assert peer.pop3("QUIT").startswith(b"+OK")


def test_wrong_passwords_on_one_connection_end_it(lan_server: NosendServer) -> None:
    lan_server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    with RawPeer(lan_server.address("pop3"), timeout=20) as peer:
        assert peer.line().startswith(b"+OK")
        replies = []
        for guess in ("guess1", "guess2", "guess3"):
            assert peer.pop3("USER alice").startswith(b"+OK")
            replies.append(peer.pop3(f"PASS {guess}"))
        assert all(r.startswith(b"-ERR") for r in replies), replies
        closed, said = peer.closed_within(10)
        assert closed, said


def test_parallel_password_guessing_locks_the_address_out(lan_server: NosendServer) -> None:
    lan_server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    replies: list[bytes] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with RawPeer(lan_server.address("pop3"), timeout=20) as peer:
            assert peer.line().startswith(b"+OK")
            assert peer.pop3("USER alice").startswith(b"+OK")
            reply = peer.pop3(f"PASS wrong-{n}")
            with lock:
                replies.append(reply)

    start = time.monotonic()
    threads = [threading.Thread(target=guess, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    slowest = time.monotonic() - start
    assert len(replies) == 5 and all(r.startswith(b"-ERR") for r in replies), replies
    # Each failure from the address delays its reply more (0.5 s, 1 s, 2 s, ...).
    assert slowest >= 2.0
    # Now even the right password is refused from this address.
    with RawPeer(lan_server.address("pop3"), timeout=20) as peer:
        assert peer.line().startswith(b"+OK")
        assert peer.pop3("USER alice").startswith(b"+OK")
        reply = peer.pop3(f"PASS {lan_server.users['alice']}")
        assert reply.startswith(b"-ERR [AUTH]"), reply
    assert "auth_locked_out" in lan_server.log()
    assert lan_server.users["alice"] not in lan_server.log()  # no secret in the log


def test_client_that_reads_nothing_does_not_stall_others(lan_server: NosendServer) -> None:
    big = SAMPLE_MESSAGES[3]
    lan_server.deliver_directly("alice", big)
    lan_server.deliver_directly("bob", SAMPLE_MESSAGES[0])
    before = rss_kb(lan_server)
    with RawPeer(lan_server.address("pop3"), timeout=20) as stuck:
        login(stuck, lan_server)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Ask for 300 KB x 1000 and never read: were the replies queued instead of
        # waiting for the socket, the server would grow by 300 MB.
        stuck.send(b"RETR 1\r\n" * 1000)
        time.sleep(1.0)
        with RawPeer(lan_server.address("pop3"), timeout=10) as other:
            login(other, lan_server, "bob")
            assert other.pop3("RETR 1").startswith(b"+OK")
            body = b"\n".join(other.multiline()) + b"\n"
            assert body == SAMPLE_MESSAGES[0]
            assert other.pop3("QUIT").startswith(b"+OK")
        growth = rss_kb(lan_server) - before
        assert growth < 50 * 1024, growth
    # Once the deaf client is gone, its session ends and the maildrop lock is free.
    deadline = time.monotonic() + 10
    while True:
        with RawPeer(lan_server.address("pop3")) as again:
            assert again.line().startswith(b"+OK")
            assert again.pop3("USER alice").startswith(b"+OK")
            reply = again.pop3(f"PASS {lan_server.users['alice']}")
        if reply.startswith(b"+OK") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.startswith(b"+OK"), reply


def rss_kb(server: NosendServer) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_second_login_to_a_locked_maildrop_gets_in_use(lan_server: NosendServer) -> None:
    lan_server.deliver_directly("alice", SAMPLE_MESSAGES[0])
    with RawPeer(lan_server.address("pop3")) as first:
        login(first, lan_server)
        assert first.pop3("DELE 1").startswith(b"+OK")
        with RawPeer(lan_server.address("pop3")) as second:
            assert second.line().startswith(b"+OK")
            assert second.pop3("USER alice").startswith(b"+OK")
            reply = second.pop3(f"PASS {lan_server.users['alice']}")
            # RFC 2449 section 8.1: the maildrop is locked by the first session.
            assert reply.startswith(b"-ERR [IN-USE]"), reply
        assert first.pop3("QUIT").startswith(b"+OK")
    assert lan_server.messages("alice") == []


def test_plaintext_on_the_pop3s_port_is_dropped(nosend_factory: ServerFactory) -> None:  # noqa: F811
    server = nosend_factory(services=POP3)
    with RawPeer(server.address("pop3s")) as peer:
        peer.send(b"USER alice\r\nPASS " + server.users["alice"].encode() + b"\r\n")
        closed, said = peer.closed_within(10)
        assert closed
        assert b"+OK" not in said
    assert server.users["alice"] not in server.log()


def test_queue_drop_dele_without_quit_keeps_the_queue(
    nosend_factory: ServerFactory,  # noqa: F811
) -> None:
    server = nosend_factory(
        services=("smtp", "pop3"), queue_drop_mailbox="bob", lan_plaintext_auth="yes"
    )
    with RawPeer(server.address("smtp")) as peer:
        assert peer.reply()[0] == 220
        assert peer.smtp("EHLO client.test")[0] == 250
        assert peer.smtp("MAIL FROM:<skipper@nosend.test>")[0] == 250
        assert peer.smtp("RCPT TO:<friend@remote.example>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        assert peer.smtp(b"Subject: out\r\n\r\nqueued\r\n.")[0] == 250
    queued = server.queue_files()
    assert queued
    # The collector drops the line after DELE: the recipient stays pending.
    with RawPeer(server.address("pop3")) as peer:
        login(peer, server, "bob")
        assert peer.pop3("STAT").startswith(b"+OK 1 ")
        assert peer.pop3("DELE 1").startswith(b"+OK")
    server.wait_until_sessions_end()  # the dropped session has unlocked the drop
    with RawPeer(server.address("pop3")) as peer:
        login(peer, server, "bob")
        assert peer.pop3("STAT").startswith(b"+OK 1 ")
        assert peer.pop3("RETR 1").startswith(b"+OK")
        text = b"\n".join(peer.multiline())
        assert b"X-Envelope-To: <friend@remote.example>" in text and b"\nqueued" in text
        assert peer.pop3("QUIT").startswith(b"+OK")
    assert [p.name for p in server.queue_files() if p.name != "drop.lock"] == [
        p.name for p in queued if p.name != "drop.lock"
    ]
