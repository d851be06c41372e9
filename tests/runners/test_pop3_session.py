"""POP3 session transcripts through the in-memory harness: login policy, the session
lock, listings from the store, streamed RETR/TOP, deletions only at QUIT, STLS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import anyio
import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.tls import server_context
from nosend_runners.testing.harness import Harness, harness_state, run_script
from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox
from tests.runners.conftest import CertFiles
from tests.runners.session_support import (
    CAROL_SECRET,
    LOOPBACK,
    PASSWORDS,
    STRANGER,
    TRUSTED,
    captured_log,
    deliver,
    mailbox,
    make_config,
    messages,
)

pytestmark = pytest.mark.anyio

MSG1 = b"From: a@example.net\nSubject: one\n\nfirst body\n.starts with a dot\n"
MSG2 = b"From: b@example.net\nSubject: two\n\n" + b"line\n" * 50


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


async def login(h: Harness, user: str = "alice") -> bytes:
    assert (await h.read_line()).startswith(b"+OK")
    await h.send_line(f"USER {user}")
    assert await h.read_line() == b"+OK send PASS"
    await h.send_line(f"PASS {PASSWORDS[user]}")
    return await h.read_line()


async def test_login_list_uidl_retr_and_quit_deletes(config: Config) -> None:
    k1 = deliver(config, "alice", MSG1)
    deliver(config, "alice", MSG2)
    listing = mailbox(config, "alice").list_messages()
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        ok = await login(h)
        total = sum(m.size for m in listing)
        assert ok == f"+OK maildrop has 2 messages ({total} octets)".encode()
        await h.send_line("UIDL")
        assert (await h.read_line()).startswith(b"+OK")
        assert await h.read_multiline() == [
            f"{i} {m.uidl}".encode() for i, m in enumerate(listing, 1)
        ]
        await h.send_line("LIST")
        await h.read_line()
        assert await h.read_multiline() == [
            f"{i} {m.size}".encode() for i, m in enumerate(listing, 1)
        ]
        await h.send_line("RETR 1")
        assert await h.read_line() == f"+OK {listing[0].size} octets".encode()
        body = await h.read_multiline()
        assert b"\r\n".join(body) + b"\r\n" == MSG1.replace(b"\n", b"\r\n")
        await h.send_line("DELE 1")
        assert (await h.read_line()).startswith(b"+OK")
        # Until QUIT the message is still on disk (RFC 1939 section 6).
        assert len(messages(config, "alice")) == 2
        await h.send_line("QUIT")
        assert (await h.read_line()).startswith(b"+OK")
        await h.wait_closed()
    remaining = mailbox(config, "alice").list_messages()
    assert [m.key for m in remaining] == [listing[1].key]
    assert k1 not in {m.key for m in remaining}


async def test_dropped_connection_deletes_nothing_and_releases_lock(config: Config) -> None:
    deliver(config, "alice", MSG1)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await login(h)).startswith(b"+OK")
        await h.send_line("DELE 1")
        await h.read_line()
        await h.close()  # no QUIT
        await h.wait_closed()
    assert len(messages(config, "alice")) == 1
    # The lock was released: a new session can log in.
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await login(h)).startswith(b"+OK maildrop has 1 message")


async def test_second_login_gets_in_use(config: Config) -> None:
    state = harness_state(config)
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as first:
        assert (await login(first)).startswith(b"+OK")
        async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as second:
            assert (await login(second)).startswith(b"-ERR [IN-USE]")
            await second.send_line("QUIT")
            assert (await second.read_line()).startswith(b"+OK")
        await first.send_line("QUIT")
        assert (await first.read_line()).startswith(b"+OK")
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as third:
        assert (await login(third)).startswith(b"+OK")


async def test_failed_logins_are_delayed_and_lock_the_address_out(config: Config) -> None:
    tracker = AuthFailureTracker(max_failures=3, window=60, max_delay=0.2)
    state = harness_state(config, auth_failures=tracker)
    started = anyio.current_time()
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        await h.read_line()
        for _ in range(2):
            await h.send_line("USER alice")
            await h.read_line()
            await h.send_line("PASS wrong")
            assert await h.read_line() == b"-ERR [AUTH] authentication failed"
    # Each failure waited failure_delay(): 0.5 s capped at 0.2 s, twice.
    assert anyio.current_time() - started >= 0.35
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        await h.read_line()
        await h.send_line("USER alice")
        await h.read_line()
        await h.send_line("PASS wrong")
        assert await h.read_line() == b"-ERR [AUTH] authentication failed"
        assert await h.wait_closed() == b""  # third failure: locked out, disconnected
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        # Even the right password is refused while the address is locked out.
        line = await login(h)
        assert line.startswith(b"-ERR [AUTH]") and b"try again later" in line
        await h.wait_closed()
    # Another address is not affected.
    async with Harness(pop3_session, "pop3", state=state, peer=TRUSTED) as h:
        await h.read_line()
        await h.send_line("AUTH PLAIN " + _plain("alice"))
        assert (await h.read_line()).startswith(b"-ERR [AUTH]")  # no TLS: plaintext refused


def _plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{PASSWORDS[user]}".encode()).decode()


async def test_plaintext_login_refused_without_tls_from_strangers(config: Config) -> None:
    async with Harness(pop3_session, "pop3", config=config, peer=STRANGER) as h:
        await h.read_line()
        await h.send_line("CAPA")
        await h.read_line()
        caps = await h.read_multiline()
        assert b"USER" not in caps and b"SASL CRAM-MD5" in caps
        await h.send_line("USER alice")
        assert (await h.read_line()).startswith(b"-ERR [AUTH]")


async def test_lan_plaintext_auth_allows_trusted_networks(tmp_path: Path) -> None:
    config = make_config(tmp_path, "lan_plaintext_auth = yes")
    async with Harness(pop3_session, "pop3", config=config, peer=TRUSTED) as h:
        assert (await login(h, "bob")).startswith(b"+OK")
    async with Harness(pop3_session, "pop3", config=config, peer=STRANGER) as h:
        await h.read_line()
        await h.send_line("USER bob")
        assert (await h.read_line()).startswith(b"-ERR [AUTH]")


async def test_apop_and_cram_md5_with_shared_secret(config: Config) -> None:
    async with Harness(pop3_session, "pop3", config=config, peer=STRANGER) as h:
        greeting = await h.read_line()
        stamp = greeting[greeting.index(b"<") :]
        digest = hashlib.md5(stamp + CAROL_SECRET.encode()).hexdigest()
        await h.send_line(f"APOP carol {digest}")
        assert (await h.read_line()).startswith(b"+OK maildrop has 0 messages")
        await h.send_line("QUIT")
        await h.read_line()
    async with Harness(pop3_session, "pop3", config=config, peer=STRANGER) as h:
        await h.read_line()
        await h.send_line("AUTH CRAM-MD5")
        challenge = base64.b64decode((await h.read_line())[2:])
        mac = hmac.new(CAROL_SECRET.encode(), challenge, hashlib.md5).hexdigest()
        await h.send_line(base64.b64encode(f"carol {mac}".encode()).decode())
        assert (await h.read_line()).startswith(b"+OK")


async def test_top_sends_header_and_n_lines(config: Config) -> None:
    deliver(config, "alice", MSG2)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        await h.send_line("TOP 1 2")
        assert (await h.read_line()).startswith(b"+OK")
        assert await h.read_multiline() == [
            b"From: b@example.net",
            b"Subject: two",
            b"",
            b"line",
            b"line",
        ]


async def test_large_message_streams_exactly(config: Config) -> None:
    body = b"".join(b"%06d " % i + os.urandom(30).hex().encode() + b"\n" for i in range(40000))
    big = b"Subject: big\n\n" + body
    deliver(config, "alice", big)
    size = mailbox(config, "alice").list_messages()[0].size
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        await h.send_line("RETR 1")
        assert await h.read_line() == f"+OK {size} octets".encode()
        lines = await h.read_multiline()
    got = b"\r\n".join(lines) + b"\r\n"
    assert got == big.replace(b"\n", b"\r\n") and len(got) == size


async def test_message_removed_by_another_program(config: Config) -> None:
    key = deliver(config, "alice", MSG1)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        MaildirMailbox(config.maildir_path("alice")).delete([key])
        await h.send_line("RETR 1")
        assert (await h.read_line()).startswith(b"-ERR [SYS/TEMP]")
        await h.send_line("NOOP")
        assert (await h.read_line()).startswith(b"+OK")


async def test_stls_then_user_pass(config: Config, tls_cert: CertFiles) -> None:
    deliver(config, "alice", MSG1)
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(pop3_session, "pop3", config=config, peer=STRANGER, server_ssl=context) as h:
        await h.read_line()
        # Pipelined bytes after STLS are discarded (RFC 2595 section 4).
        await h.send(b"STLS\r\nUSER alice\r\n")
        assert await h.read_line() == b"+OK Begin TLS negotiation"
        await h.start_tls()
        await h.send_line("CAPA")
        await h.read_line()
        caps = await h.read_multiline()
        assert b"USER" in caps and b"STLS" not in caps
        await h.send_line("USER alice")
        assert await h.read_line() == b"+OK send PASS"
        await h.send_line(f"PASS {PASSWORDS['alice']}")
        assert (await h.read_line()).startswith(b"+OK maildrop has 1 message")
        assert h.ctx is not None and h.ctx.peer.tls


async def test_implicit_tls_pop3s(config: Config, tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(
        pop3_session, "pop3s", config=config, peer=STRANGER, server_ssl=context
    ) as h:
        assert (await login(h, "bob")).startswith(b"+OK")


async def test_stls_refused_without_certificate(config: Config) -> None:
    out = await run_script(pop3_session, "pop3", b"STLS\r\nQUIT\r\n", config=config, peer=STRANGER)
    assert b"-ERR STLS not available" in out or b"-ERR" in out.split(b"\r\n")[1]


async def test_idle_timeout_autologout_keeps_messages(config: Config) -> None:
    deliver(config, "alice", MSG1)
    state = harness_state(config)
    state.timeouts = type(state.timeouts)(pop3_idle=0.2)
    async with Harness(pop3_session, "pop3", state=state, peer=LOOPBACK) as h:
        await login(h)
        await h.send_line("DELE 1")
        await h.read_line()
        assert await h.read_line() == b"-ERR [SYS/TEMP] autologout timer expired, closing"
        await h.wait_closed()
    assert len(messages(config, "alice")) == 1


async def test_shutdown_while_idle(config: Config) -> None:
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        h.request_shutdown()
        assert (await h.read_line()).startswith(b"-ERR [SYS/TEMP] server shutting down")
        await h.wait_closed()


async def test_no_configuration_refuses_greeting() -> None:
    out = await run_script(pop3_session, "pop3", b"", peer=LOOPBACK)
    assert out.startswith(b"-ERR [SYS/TEMP]")


async def test_log_lines_name_the_user_and_never_the_password(config: Config) -> None:
    deliver(config, "alice", MSG1)
    with captured_log() as lines:
        async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
            await h.read_line()
            await h.send_line("USER alice")
            await h.read_line()
            await h.send_line("PASS not-the-password")
            await h.read_line()
            await h.send_line("AUTH PLAIN " + _plain("alice"))
            assert (await h.read_line()).startswith(b"+OK")
            await h.send_line("QUIT")
            await h.read_line()
    text = "\n".join(lines)
    assert "event=auth_failed" in text and "user=alice" in text
    assert "event=login" in text and "messages=1" in text
    assert "event=quit" in text and "event=disconnect" in text
    for secret in ("not-the-password", PASSWORDS["alice"], _plain("alice")):
        assert secret not in text


async def test_too_many_bad_commands_close_the_connection(config: Config) -> None:
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await h.read_line()
        await h.send(b"BOGUS\r\n" * 15)
        errors = [await h.read_line() for _ in range(10)]
        assert all(line.startswith(b"-ERR") for line in errors)
        # A last line says why the connection ends (test_pop3_too_many_errors).
        assert await h.wait_closed() == b"-ERR too many errors, closing\r\n"


async def test_queue_drop_mailbox_serves_the_outbound_queue(config: Config) -> None:
    from dataclasses import replace

    from nosend_store.queue import Envelope, OutboundQueue

    queue = OutboundQueue(config.server.queue_dir)
    qid = queue.enqueue(
        Envelope.simple("alice@example.test", ["x@remote.example", "y@remote.example"]),
        [b"Subject: out\r\n\r\nbody\r\n"],
    )
    # [server] queue_drop_mailbox = carol
    config = replace(config, server=replace(config.server, queue_drop_mailbox="carol"))
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await login(h, "carol")).startswith(b"+OK maildrop has 2 messages")
        await h.send_line("RETR 1")
        assert (await h.read_line()).startswith(b"+OK")
        lines = await h.read_multiline()
        assert lines[:2] == [
            b"Return-Path: <alice@example.test>",
            b"X-Envelope-To: <x@remote.example>",
        ]
        await h.send_line("DELE 1")
        await h.read_line()
        await h.send_line("QUIT")
        assert (await h.read_line()).startswith(b"+OK")
    entry = queue.get(qid)
    assert entry is not None
    assert [(r.address, r.state) for r in entry.recipients] == [
        ("x@remote.example", "delivered"),
        ("y@remote.example", "pending"),
    ]
    # Other mailboxes still see their Maildir.
    deliver(config, "alice", MSG1)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await login(h, "alice")).startswith(b"+OK maildrop has 1 message")
