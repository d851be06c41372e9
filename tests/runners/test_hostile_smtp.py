"""Hostile SMTP peers against a real ``nosend serve`` (raw sockets, no client library).

Open-relay attempts, STARTTLS command injection, SMTP smuggling with bare CR/LF, overlong
lines and messages, silent and deaf clients, password guessing and connections that drop
in the middle of a body. Every test starts its own server (fixtures from
``tests/interop/conftest.py``), so the per-address authentication tracker starts empty.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from tests.interop.conftest import (  # noqa: F401 - fixtures used by name
    DOMAIN,
    NosendServer,
    RawPeer,
    ServerFactory,
    nosend_factory,
    tls_files,
)

SMTP = ("smtp", "submission")
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
# An address range nobody runs these tests from: the loopback client is not trusted.
UNTRUSTED = "198.51.100.0/24"


def ehlo(peer: RawPeer) -> list[bytes]:
    code, _ = peer.reply()
    assert code == 220
    code, lines = peer.smtp("EHLO client.test")
    assert code == 250
    return lines


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def nothing_left_behind(server: NosendServer, *mailboxes: str) -> None:
    """No message delivered to, and no half-written file left in, any of ``mailboxes``.

    Checked once the server has ended every session: a session cut off mid-message
    removes its tmp/ file when it ends, which can be well after the client has gone (and
    a slow server may even create the file after the client has gone). Every caller has
    had an answer from the server, so its sessions are in the log already."""
    server.wait_until_sessions_end()
    for mailbox in mailboxes:
        assert server.messages(mailbox) == [], mailbox
        assert server.tmp_files(mailbox) == [], mailbox


@pytest.fixture
def server(nosend_factory: ServerFactory) -> NosendServer:  # noqa: F811
    return nosend_factory(services=SMTP)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """For the tests where cancellation semantics matter: both event loops."""
    return str(request.param)


@pytest.fixture
def either_server(nosend_factory: ServerFactory, backend: str) -> NosendServer:  # noqa: F811
    return nosend_factory(services=SMTP, backend=backend)


# -- open relay ------------------------------------------------------------------------


RELAY_ATTEMPTS = [
    "<victim@remote.example>",
    "<VICTIM@Remote.Example.>",
    "<@nosend.test:victim@remote.example>",  # source route (RFC 5321 appendix C)
    '<"victim@remote.example"@nosend.test>',
    "<victim%remote.example@nosend.test>",  # the percent hack
    "<victim@remote.example@nosend.test>",
]


def test_untrusted_client_cannot_relay(nosend_factory: ServerFactory) -> None:  # noqa: F811
    server = nosend_factory(services=SMTP, trusted_networks=UNTRUSTED)
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<spammer@remote.example>")[0] == 250
        for rcpt in RELAY_ATTEMPTS:
            code, text = peer.smtp(f"RCPT TO:{rcpt}")
            assert 500 <= code < 600, (rcpt, code, text)
        code, text = peer.smtp("RCPT TO:<victim@remote.example>")
        assert (code, text[0][:5]) == (550, b"5.7.1"), text
        # A local recipient is still fine, and only it gets the message.
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        assert peer.smtp(b"Subject: hi\r\n\r\nbody\r\n.")[0] == 250
        assert peer.smtp("QUIT")[0] == 221
    assert server.queue_files() == []
    assert len(server.wait_for_messages("alice", 1)) == 1


def test_authenticated_client_may_relay_and_trusted_network_may_too(
    nosend_factory: ServerFactory,  # noqa: F811
) -> None:
    untrusted = nosend_factory(services=SMTP, trusted_networks=UNTRUSTED)
    with RawPeer(untrusted.address("submission")) as peer:
        ehlo(peer)
        # Submission (RFC 6409 section 4.3): nothing before AUTH.
        code, text = peer.smtp("MAIL FROM:<alice@nosend.test>")
        assert code == 530, text
        code, _ = peer.smtp(f"AUTH PLAIN {plain('alice', untrusted.users['alice'])}")
        assert code == 235
        assert peer.smtp(f"MAIL FROM:<{ALICE}>")[0] == 250
        assert peer.smtp("RCPT TO:<friend@remote.example>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        assert peer.smtp(b"Subject: out\r\n\r\nto the world\r\n.")[0] == 250
    assert untrusted.queue_files() != []  # queued for the link, not refused

    trusted = nosend_factory(services=SMTP)  # default: 127.0.0.0/8 is trusted
    with RawPeer(trusted.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<crew@laptop.lan>")[0] == 250
        assert peer.smtp("RCPT TO:<friend@remote.example>")[0] == 250


def test_unknown_local_user_is_refused_at_rcpt(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        code, text = peer.smtp(f"RCPT TO:<nobody@{DOMAIN}>")
        assert (code, text[0][:5]) == (550, b"5.1.1")
        code, _ = peer.smtp("DATA")
        # RFC 5321 section 3.3: with every RCPT refused, DATA gets 554 or 503.
        assert code in (554, 503)


# -- STARTTLS injection -------------------------------------------------------------------


def test_commands_pipelined_with_starttls_are_not_executed(either_server: NosendServer) -> None:
    assert either_server.tls is not None
    with RawPeer(either_server.address("smtp")) as peer:
        ehlo(peer)
        # RFC 3207 section 4.2 / CVE-2011-0411: commands sent in cleartext in the same
        # packet as STARTTLS must be thrown away, not run inside the TLS session.
        peer.send(
            b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\n"
            b"RCPT TO:<" + ALICE.encode() + b">\r\nDATA\r\n"
        )
        code, _ = peer.reply()
        assert code == 220
        peer.start_tls(either_server.tls.client_context())  # asserts no cleartext reply followed
        code, lines = peer.smtp("EHLO client.test")
        assert code == 250 and b"STARTTLS" not in lines
        code, text = peer.smtp(f"RCPT TO:<{ALICE}>")
        assert code == 503, text  # no MAIL was given inside TLS: the injected one is gone
        assert peer.smtp("DATA")[0] == 503
        assert peer.smtp("QUIT")[0] == 221
    nothing_left_behind(either_server, "alice")


# -- SMTP smuggling ---------------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n"
    b"From: ceo@nosend.test\r\nSubject: smuggled\r\n\r\nsend money\r\n"
)
FAKE_ENDS = [
    b"\n.\n",  # bare LF
    b"\r.\r",  # bare CR
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggled_end_of_data_neither_ends_nor_splits_the_message(
    server: NosendServer, fake_end: bytes
) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        peer.send(b"Subject: innocent\r\n\r\nhello" + fake_end + SMUGGLED + b".\r\n")
        code, text = peer.reply()
        # The documented default (bare_newlines = "reject", like Postfix's
        # smtpd_forbid_bare_newline): the whole body up to the real CRLF.CRLF is one
        # message, refused. A NUL is not a line end, so that body is refused as well or
        # delivered whole; either way, one reply for one body.
        if fake_end.count(b"\r") == fake_end.count(b"\n") == fake_end.count(b"\r\n"):
            assert code in (250, 550), text
        else:
            assert (code, text[0][:5]) == (550, b"5.6.0"), text
        # Nothing smuggled got its own replies: the next reply answers our NOOP.
        code, text = peer.smtp("NOOP")
        assert code == 250, text
        assert peer.smtp("QUIT")[0] == 221
    nothing_left_behind(server, "bob")
    delivered = server.messages("alice")
    if fake_end == b"\r\n\x00.\r\n" and delivered:
        assert len(delivered) == 1 and b"send money" in delivered[0]
    else:
        assert delivered == []
        assert server.tmp_files("alice") == []


def test_bdat_body_with_bare_lf_is_refused_too(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        body = b"Subject: x\r\n\r\nhello\n.\n" + SMUGGLED
        peer.send(b"BDAT %d LAST\r\n" % len(body) + body)
        code, text = peer.reply()
        assert (code, text[0][:5]) == (550, b"5.6.0"), text
        assert peer.smtp("NOOP")[0] == 250
    nothing_left_behind(server, "alice", "bob")


# -- limits ------------------------------------------------------------------------------


def test_overlong_command_line_gets_500_and_the_session_goes_on(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        code, text = peer.smtp(b"MAIL FROM:<" + b"a" * 20_000 + b"@remote.example>")
        assert code == 500, text
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        assert peer.smtp(b"Subject: ok\r\n\r\nfine\r\n.")[0] == 250
    assert len(server.wait_for_messages("alice", 1)) == 1


def test_overlong_text_line_in_the_body_is_refused(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        # RFC 5321 section 4.5.3.1.6: 1000 octets per line with CRLF.
        code, text = peer.smtp(b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n.")
        assert code == 550, text
    nothing_left_behind(server, "alice")


def test_message_over_size_gets_552(nosend_factory: ServerFactory) -> None:  # noqa: F811
    server = nosend_factory(services=SMTP, max_message_size="20K")
    with RawPeer(server.address("smtp")) as peer:
        lines = ehlo(peer)
        assert b"SIZE 20480" in lines
        # RFC 1870 section 6.1: a declared size over the limit is refused at MAIL.
        code, text = peer.smtp("MAIL FROM:<a@remote.example> SIZE=50000")
        assert (code, text[0][:5]) == (552, b"5.3.4"), text
        # Undeclared: the body is read to its end and refused (section 6.3).
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        body = b"Subject: big\r\n\r\n" + (b"z" * 900 + b"\r\n") * 200  # 180 KB
        code, text = peer.smtp(body + b".")
        assert (code, text[0][:5]) == (552, b"5.3.4"), text
        assert peer.smtp("NOOP")[0] == 250
    nothing_left_behind(server, "alice")


def test_too_many_recipients_get_452(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        peer.send(f"RCPT TO:<{ALICE}>\r\n".encode() * 105)
        codes = [peer.reply()[0] for _ in range(105)]
        assert codes[:100] == [250] * 100
        assert set(codes[100:]) == {452}


# -- connections that misbehave in time ---------------------------------------------------


def test_disconnect_in_the_middle_of_data_delivers_nothing(either_server: NosendServer) -> None:
    with RawPeer(either_server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{BOB}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        peer.send(b"Subject: cut\r\n\r\n" + (b"partial body line\r\n" * 20_000))
        time.sleep(0.3)  # let the server write some of it
    nothing_left_behind(either_server, "alice", "bob")
    assert either_server.queue_files() == []
    assert "event=accepted" not in either_server.log()


def test_reset_in_the_middle_of_data_delivers_nothing(either_server: NosendServer) -> None:
    with RawPeer(either_server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        peer.send(b"Subject: cut\r\n\r\n" + (b"partial body line\r\n" * 20_000))
        time.sleep(0.3)
        # SO_LINGER 0: close sends a TCP RST instead of a FIN.
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    nothing_left_behind(either_server, "alice")


def test_client_that_sends_nothing_is_closed_at_the_timeout(
    nosend_factory: ServerFactory,  # noqa: F811
    backend: str,
) -> None:
    server = nosend_factory(services=SMTP, smtp_timeout="1s", backend=backend)
    # Taken before connecting: the server's timer starts after the accept, so this
    # bound holds however late this process sees the greeting.
    start = time.monotonic()
    with RawPeer(server.address("smtp")) as peer:
        assert peer.reply()[0] == 220
        closed, said = peer.closed_within(8)
        assert closed, said
        assert time.monotonic() - start >= 0.9
        assert said.startswith(b"421 4.4.2"), said


def test_client_that_stalls_in_data_is_closed_and_nothing_is_delivered(
    nosend_factory: ServerFactory,  # noqa: F811
    backend: str,
) -> None:
    server = nosend_factory(services=SMTP, smtp_timeout="1s", backend=backend)
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        assert peer.smtp("DATA")[0] == 354
        peer.send(b"Subject: slow\r\n\r\nthe first line, then nothing\r\n")
        closed, said = peer.closed_within(8)
        assert closed, said
        assert said.startswith(b"421"), said
    nothing_left_behind(server, "alice")


def test_client_that_reads_nothing_costs_bounded_memory_and_blocks_no_one(
    server: NosendServer,
) -> None:
    with RawPeer(server.address("smtp"), timeout=20) as deaf:
        deaf.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert deaf.reply()[0] == 220
        # Pipelined commands whose replies are never read. Once the server's send blocks
        # it must stop reading (no unbounded reply queue), so our send stalls too.
        deaf.sock.setblocking(False)
        junk = b"NOOP\r\n" * 100_000
        sent = 0
        start = last_progress = time.monotonic()
        stalled = False
        while time.monotonic() - start < 15:
            try:
                sent += deaf.sock.send(junk)
                last_progress = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - last_progress > 1.0:
                    stalled = True
                    break
                time.sleep(0.01)
        assert stalled, f"the server kept reading: {sent} bytes"
        # Others are served meanwhile.
        with RawPeer(server.address("smtp"), timeout=10) as other:
            ehlo(other)
            assert other.smtp("MAIL FROM:<a@remote.example>")[0] == 250
            assert other.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
            assert other.smtp("DATA")[0] == 354
            assert other.smtp(b"Subject: ok\r\n\r\nserved\r\n.")[0] == 250
        assert rss_kb(server) < 150 * 1024
    assert len(server.wait_for_messages("alice", 1)) == 1


# -- password guessing ------------------------------------------------------------------


def test_parallel_password_guessing_locks_the_address_out(server: NosendServer) -> None:
    replies: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with RawPeer(server.address("submission"), timeout=20) as peer:
            ehlo(peer)
            code, _ = peer.smtp(f"AUTH PLAIN {plain('alice', f'wrong-{n}')}")
            with lock:
                replies.append(code)

    start = time.monotonic()
    threads = [threading.Thread(target=guess, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(replies) == [535] * 5
    assert time.monotonic() - start >= 2.0  # failures are answered ever more slowly
    with RawPeer(server.address("submission"), timeout=20) as peer:
        ehlo(peer)
        code, text = peer.smtp(f"AUTH PLAIN {plain('alice', server.users['alice'])}")
        assert code in (421, 454), text  # even the right password: locked out for now
    assert "auth_locked_out" in server.log()
    assert server.users["alice"] not in server.log()


def test_garbage_commands_end_with_421_not_a_crash(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        for garbage in (b"\x00\xff\xfe", b"\x1b[2J", "MAIL FROM:<ü@x>".encode("latin-1")):
            peer.send(garbage + b"\r\n")
        codes = [peer.reply()[0] for _ in range(3)]
        assert all(500 <= c < 600 for c in codes), codes
        peer.send(b"FOO\r\n" * 20)
        closed, said = peer.closed_within(5)
        assert closed and b"421" in said, said
    # The server is still there for the next client.
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("QUIT")[0] == 221


def rss_kb(server: NosendServer) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- floods and junk on TLS ports --------------------------------------------------------


def test_connection_flood_from_one_address_is_refused_with_421(
    nosend_factory: ServerFactory,  # noqa: F811
) -> None:
    # Trusted networks are exempt from the per-client cap: this client is not trusted.
    server = nosend_factory(services=SMTP, max_connections_per_ip="3", trusted_networks=UNTRUSTED)
    held = [RawPeer(server.address("smtp")) for _ in range(3)]
    try:
        for peer in held:
            assert peer.reply()[0] == 220
        with RawPeer(server.address("smtp")) as extra:
            code, text = extra.reply()
            assert (code, text[0][:5]) == (421, b"4.7.0"), text
            closed, said = extra.closed_within(5)
            assert closed, said
    finally:
        for peer in held:
            peer.close()
    # Slots are given back when those connections end.
    deadline = time.monotonic() + 5
    while True:
        with RawPeer(server.address("smtp")) as peer:
            code, _ = peer.reply()
        if code == 220 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 220


def test_plaintext_on_the_smtps_port_is_dropped_and_the_server_goes_on(
    nosend_factory: ServerFactory,  # noqa: F811
) -> None:
    server = nosend_factory(services=("smtp", "smtps"))
    assert server.tls is not None
    with RawPeer(server.address("smtps")) as peer:
        peer.send(b"EHLO client.test\r\nMAIL FROM:<a@remote.example>\r\n")
        closed, said = peer.closed_within(10)
        assert closed
        assert b"250" not in said  # nothing was answered in cleartext
    # A real TLS client is served right after.
    with RawPeer(server.address("smtps")) as peer:
        peer.start_tls(server.tls.client_context())
        code, _ = peer.reply()
        assert code == 220
        assert peer.smtp("EHLO client.test")[0] == 250
        assert peer.smtp("QUIT")[0] == 221


def test_an_overlong_command_line_is_answered_500(server: NosendServer) -> None:
    with RawPeer(server.address("smtp"), timeout=20) as peer:
        ehlo(peer)
        # Half a megabyte without a line end: read and thrown away, and answered 500 once
        # the line ends (RFC 5321 section 4.5.3.1.4).
        peer.send(b"x" * (512 * 1024))
        code, text = peer.smtp(b"")
        assert code == 500, text
        assert peer.smtp("NOOP")[0] == 250


def test_an_endless_command_line_is_cut_off_with_bounded_memory(server: NosendServer) -> None:
    cap = 64 << 20
    sent = 0
    with RawPeer(server.address("smtp"), timeout=20) as peer:
        ehlo(peer)
        # A line that never ends used to be read (and thrown away) for ever: now the
        # server gives up after a bounded excess (session.wire.MAX_SILENT_INPUT).
        chunk = b"x" * (1 << 20)
        try:
            while sent < cap:
                peer.send(chunk)
                sent += len(chunk)
        except OSError:
            pass  # reset or broken pipe: the server closed
        assert rss_kb(server) < 150 * 1024
    assert sent < cap


def test_disconnect_between_bdat_chunks_delivers_nothing(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("MAIL FROM:<a@remote.example>")[0] == 250
        assert peer.smtp(f"RCPT TO:<{ALICE}>")[0] == 250
        first = b"Subject: chunks\r\n\r\nfirst chunk\r\n"
        assert peer.smtp(b"BDAT %d\r\n" % len(first) + first[:-2])[0] == 250
        # RFC 3030: the message exists only after BDAT LAST; this one never gets it.
        peer.send(b"BDAT 100000 LAST\r\n" + b"y" * 5000)
        time.sleep(0.2)
    nothing_left_behind(server, "alice")


def test_body_end_and_quit_in_one_packet_deliver_once(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        peer.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<" + ALICE.encode() + b">\r\nDATA\r\n")
        assert [peer.reply()[0] for _ in range(3)] == [250, 250, 354]
        peer.send(b"Subject: fast\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert peer.reply()[0] == 250
        assert peer.reply()[0] == 221
        closed, said = peer.closed_within(5)
        assert closed and said == b"", said
    messages = server.wait_for_messages("alice", 1)
    assert len(messages) == 1 and messages[0].endswith(b"\nSubject: fast\n\nbody\n")


def test_garbage_instead_of_a_tls_handshake_after_starttls(server: NosendServer) -> None:
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("STARTTLS")[0] == 220
        peer.send(b"\x16\x03\x01\x00\x05hello, not really TLS\r\nMAIL FROM:<a@b>\r\n")
        closed, said = peer.closed_within(10)
        assert closed
        assert b"250" not in said  # the junk was never read as SMTP
    with RawPeer(server.address("smtp")) as peer:
        ehlo(peer)
        assert peer.smtp("QUIT")[0] == 221
    assert server.proc is not None and server.proc.poll() is None
