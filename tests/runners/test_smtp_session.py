"""SMTP session transcripts through the in-memory harness: recipients at RCPT time, no
open relay, submission rules, AUTH and STARTTLS, size limits, durable delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import anyio
import pytest

from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.serve.limits import AuthFailureTracker
from nosend_runners.serve.tls import server_context
from nosend_runners.session.boundary import PeerInfo
from nosend_runners.testing.harness import Harness, harness_state, run_script
from nosend_store.config import Config
from nosend_store.queue import QueueWriter
from tests.runners.conftest import CertFiles
from tests.runners.session_support import (
    CAROL_SECRET,
    LOOPBACK,
    PASSWORDS,
    STRANGER,
    TRUSTED,
    captured_log,
    make_config,
    messages,
    queued,
)

pytestmark = pytest.mark.anyio

# 2026-01-02 03:04:05 UTC, for reproducible Received:/Date: fields.
FIXED_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def plain(user: str, password: str | None = None) -> str:
    secret = PASSWORDS[user] if password is None else password
    return base64.b64encode(f"\0{user}\0{secret}".encode()).decode()


async def ehlo(h: Harness, name: str = "client.example") -> list[str]:
    assert (await h.read_reply()).code == 220
    await h.send_line(f"EHLO {name}")
    reply = await h.read_reply()
    assert reply.code == 250
    return list(reply.lines)


async def transaction(h: Harness, sender: str, rcpts: list[str], body: bytes) -> list[int]:
    """MAIL, RCPTs, DATA and body pipelined; the codes of every reply."""
    lines = [f"MAIL FROM:<{sender}>"] + [f"RCPT TO:<{r}>" for r in rcpts] + ["DATA"]
    await h.send("".join(f"{x}\r\n" for x in lines).encode())
    replies = await h.read_replies(len(lines))
    codes = [r.code for r in replies]
    if codes[-1] == 354:
        await h.send(body + b".\r\n")
        codes.append((await h.read_reply()).code)
    return codes


def crlf_to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


BODY = b"Subject: test\r\nMessage-ID: <m1@client.example>\r\n\r\nHello\r\n..dot line\r\n"


async def test_local_delivery_dedupes_mailboxes_and_adds_received(config: Config) -> None:
    async with Harness(
        smtp_session,
        "smtp",
        config=config,
        peer=STRANGER,
        clock=lambda: FIXED_TIME,
        nonce=lambda: "0123456789abcdef0123",
    ) as h:
        await ehlo(h)
        codes = await transaction(
            h, "sender@remote.example", ["team@example.test", "Alice@Example.Test"], BODY
        )
        assert codes == [250, 250, 250, 354, 250]
    [alice] = messages(config, "alice")
    [bob] = messages(config, "bob")
    assert alice == bob
    stamp = format_datetime(datetime.fromtimestamp(FIXED_TIME).astimezone())
    expected_received = (
        "Return-Path: <sender@remote.example>\n"
        "Received: from client.example ([192.0.2.99])\n"
        f"\tby mx.test with ESMTP id 695735a5.0123456789abcdef; {stamp}\n"
    ).encode()
    assert alice.startswith(expected_received)
    assert alice.endswith(crlf_to_lf(BODY).replace(b"\n..dot", b"\n.dot"))
    assert queued(config) == []


async def test_single_recipient_named_in_received(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        assert await transaction(h, "s@remote.example", ["bob@example.test"], BODY) == [
            250,
            250,
            354,
            250,
        ]
    [bob] = messages(config, "bob")
    header = bob.split(b"\nSubject:")[0]
    assert b"\tfor <bob@example.test>; " in header
    assert b"with ESMTP id " in header


async def test_unknown_user_and_relay_refused_at_rcpt(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        await h.send(
            b"MAIL FROM:<s@remote.example>\r\n"
            b"RCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<someone@elsewhere.example>\r\n"
            b"DATA\r\n"
        )
        mail, unknown, relay, data = await h.read_replies(4)
        assert (mail.code, unknown.code, relay.code) == (250, 550, 550)
        assert unknown.enhanced == "5.1.1"
        assert relay.enhanced == "5.7.1" and "Relaying denied" in relay.text
        assert data.code == 554  # no valid recipients (RFC 5321 section 3.3)
    assert messages(config, "alice") == [] and queued(config) == []


async def test_postmaster_and_null_sender_always_accepted(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        codes = await transaction(
            h, "", ["postmaster", "PostMaster@example.test", "postmaster@second.test"], BODY
        )
        assert codes == [250, 250, 250, 250, 354, 250]
    # <postmaster> goes to the configured postmaster, postmaster@example.test to its alias.
    assert len(messages(config, "carol")) + len(messages(config, "alice")) == 2


async def test_trusted_network_relays_into_the_queue(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=TRUSTED) as h:
        await ehlo(h)
        await h.send(
            b"MAIL FROM:<alice@example.test> RET=HDRS ENVID=abc\r\n"
            b"RCPT TO:<friend@remote.example> NOTIFY=SUCCESS,FAILURE"
            b" ORCPT=rfc822;friend@remote.example\r\n"
            b"RCPT TO:<friend@remote.example>\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            b"DATA\r\n"
        )
        assert [r.code for r in await h.read_replies(5)] == [250, 250, 250, 250, 354]
        await h.send(BODY + b".\r\n")
        assert (await h.read_reply()).code == 250
    [(entry, content)] = queued(config)
    assert entry.sender == "alice@example.test"
    assert [r.address for r in entry.recipients] == ["friend@remote.example"]
    assert entry.recipients[0].notify == ("SUCCESS", "FAILURE")
    assert entry.recipients[0].orcpt == "rfc822;friend@remote.example"
    assert entry.envelope.ret == "HDRS" and entry.envelope.envid == "abc"
    # The local copy is final delivery and starts with Return-Path (RFC 5321 s4.4).
    assert content.startswith(b"Received: ")
    assert messages(config, "bob")[0] == b"Return-Path: <alice@example.test>\n" + content


async def test_alias_with_remote_target_from_anyone(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        assert await transaction(h, "s@remote.example", ["sales@example.test"], BODY) == [
            250,
            250,
            354,
            250,
        ]
    assert len(messages(config, "alice")) == 1
    [(entry, _)] = queued(config)
    assert [r.address for r in entry.recipients] == ["partner@remote.test"]


async def test_recipient_limit_from_config(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        rcpts = "".join(f"RCPT TO:<alice+{i}@example.test>\r\n" for i in range(6))
        await h.send(b"MAIL FROM:<s@remote.example>\r\n" + rcpts.encode())
        codes = [r.code for r in await h.read_replies(7)]
        assert codes == [250, 250, 250, 250, 250, 250, 452]


async def test_size_declared_too_big_refused_at_mail(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        lines = await ehlo(h)
        assert "SIZE 102400" in lines
        await h.send_line("MAIL FROM:<s@remote.example> SIZE=200000")
        reply = await h.read_reply()
        assert reply.code == 552 and reply.enhanced == "5.3.4"


async def test_body_over_size_refused_and_nothing_stored(config: Config) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 120
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        codes = await transaction(h, "s@remote.example", ["alice@example.test"], big)
        assert codes == [250, 250, 354, 552]
        await h.send_line("NOOP")
        assert (await h.read_reply()).code == 250
    assert messages(config, "alice") == []
    assert os.listdir(config.maildir_path("alice") / "tmp") == []


async def test_bdat_delivery(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        part1, part2 = BODY[:20], BODY[20:]
        await h.send(
            b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
            + f"BDAT {len(part1)}\r\n".encode()
            + part1
            + f"BDAT {len(part2)} LAST\r\n".encode()
            + part2
        )
        assert [r.code for r in await h.read_replies(4)] == [250, 250, 250, 250]
    [alice] = messages(config, "alice")
    assert alice.endswith(crlf_to_lf(BODY))  # BDAT bodies are not dot-stuffed


async def test_submission_requires_auth_and_adds_date_and_message_id(config: Config) -> None:
    async with Harness(
        smtp_session, "submission", config=config, peer=LOOPBACK, clock=lambda: FIXED_TIME
    ) as h:
        lines = await ehlo(h)
        assert "AUTH PLAIN LOGIN CRAM-MD5" in lines  # loopback: cleartext allowed
        await h.send_line("MAIL FROM:<alice@example.test>")
        reply = await h.read_reply()
        assert (reply.code, reply.enhanced) == (530, "5.7.0")
        await h.send_line("AUTH PLAIN " + plain("alice"))
        assert (await h.read_reply()).code == 235
        body = b"Subject: no ids\r\nFrom: alice@example.test\r\n\r\ntext\r\n"
        codes = await transaction(h, "alice@example.test", ["far@remote.example"], body)
        assert codes == [250, 250, 354, 250]
        # A message that has both fields keeps them as they are.
        codes = await transaction(
            h, "alice@example.test", ["bob@example.test"], b"Date: x\r\n" + BODY
        )
        assert codes == [250, 250, 354, 250]
    [(entry, content)] = queued(config)
    head = content.split(b"\n\n")[0]
    assert b"with ESMTPA id" in head
    date = format_datetime(datetime.fromtimestamp(FIXED_TIME).astimezone())
    assert f"\nDate: {date}\n".encode() in head
    assert head.count(b"\nMessage-ID: <") == 1 and b"@mx.test>" in head
    [bob] = messages(config, "bob")
    head = bob.split(b"\n\n")[0]
    assert head.count(b"Date:") == 1 and head.count(b"Message-ID:") == 1
    assert b"Message-ID: <m1@client.example>" in head


async def test_submission_header_without_body_separator(config: Config) -> None:
    async with Harness(smtp_session, "submission", config=config, peer=LOOPBACK) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("bob"))
        assert (await h.read_reply()).code == 235
        codes = await transaction(h, "bob@example.test", ["alice@example.test"], b"just text\r\n")
        assert codes == [250, 250, 354, 250]
    [alice] = messages(config, "alice")
    head, _, body = alice.partition(b"\n\n")
    assert body == b"just text\n"
    assert b"\nDate: " in head and b"\nMessage-ID: " in head


async def test_auth_not_offered_before_tls_to_strangers(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        lines = await ehlo(h)
        assert not any(x.startswith("AUTH") for x in lines)
        await h.send_line("AUTH PLAIN " + plain("alice"))
        reply = await h.read_reply()
        assert (reply.code, reply.enhanced) == (538, "5.7.11")


async def test_starttls_then_auth_then_relay(config: Config, tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(
        smtp_session, "submission", config=config, peer=STRANGER, server_ssl=context
    ) as h:
        lines = await ehlo(h)
        assert "STARTTLS" in lines and not any(x.startswith("AUTH") for x in lines)
        await h.send(b"STARTTLS\r\nEHLO injected\r\n")
        assert (await h.read_reply()).code == 220
        await h.start_tls()
        await h.send_line("EHLO client.example")
        lines = list((await h.read_reply()).lines)
        assert "STARTTLS" not in lines and "AUTH PLAIN LOGIN CRAM-MD5" in lines
        await h.send_line("AUTH LOGIN")
        assert (await h.read_reply()).code == 334
        await h.send_line(base64.b64encode(b"carol").decode())
        assert (await h.read_reply()).code == 334
        await h.send_line(base64.b64encode(PASSWORDS["carol"].encode()).decode())
        assert (await h.read_reply()).code == 235
        codes = await transaction(h, "carol@example.test", ["x@remote.example"], BODY)
        assert codes == [250, 250, 354, 250]
    [(_, content)] = queued(config)
    assert b"with ESMTPSA (TLSv1." in content.split(b"\n\n")[0]


async def test_authenticated_client_may_relay_on_port_25(tmp_path: Path) -> None:
    config = make_config(tmp_path, "auth_requires_tls = no")
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        codes = await transaction(h, "a@example.test", ["x@remote.example"], BODY)
        assert codes == [250, 550, 554]
        await h.send_line("RSET")  # AUTH is refused inside a transaction (RFC 4954 s4)
        assert (await h.read_reply()).code == 250
        await h.send_line("AUTH PLAIN " + plain("alice"))
        assert (await h.read_reply()).code == 235
        codes = await transaction(h, "alice@example.test", ["x@remote.example"], BODY)
        assert codes == [250, 250, 354, 250]
    assert len(queued(config)) == 1


async def test_failed_auth_delay_and_lockout(config: Config) -> None:
    tracker = AuthFailureTracker(max_failures=3, window=60, max_delay=0.05)
    state = harness_state(config, auth_failures=tracker)
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        for _ in range(2):
            await h.send_line("AUTH PLAIN " + plain("alice", "wrong"))
            reply = await h.read_reply()
            assert (reply.code, reply.enhanced) == (535, "5.7.8")
        await h.send_line("AUTH PLAIN " + plain("alice", "wrong"))
        assert (await h.read_reply()).code == 535
        closing = await h.read_reply()
        assert (closing.code, closing.enhanced) == (421, "4.7.0")
        assert await h.wait_closed() == b""
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("alice"))  # right password, still locked
        assert (await h.read_reply()).code == 421
        await h.wait_closed()
    other = PeerInfo("127.0.0.2", 5000)
    async with Harness(smtp_session, "submission", state=state, peer=other) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("alice"))
        assert (await h.read_reply()).code == 235


async def test_commit_failure_replies_451_and_leaves_nothing(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_commit(self: QueueWriter, crash_hook: object = None) -> str:
        raise OSError(5, "Input/output error")  # ENOSPC answers 452 (test_faults_*)

    monkeypatch.setattr(QueueWriter, "commit", broken_commit)
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<sales@example.test>\r\nDATA\r\n")
        assert [r.code for r in await h.read_replies(3)] == [250, 250, 354]
        await h.send(BODY + b".\r\n")
        reply = await h.read_reply()
        assert (reply.code, reply.enhanced) == (451, "4.3.0")
    # alice's copy had been committed first; it was taken back.
    assert messages(config, "alice") == []
    assert os.listdir(config.maildir_path("alice") / "tmp") == []
    assert os.listdir(config.server.queue_dir / "tmp") == []


async def test_maildir_unusable_gives_451_after_the_body(config: Config) -> None:
    box = config.maildir_path("alice")
    box.mkdir(parents=True)
    (box / "tmp").write_text("not a directory")
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        codes = await transaction(h, "s@remote.example", ["sales@example.test"], BODY)
        assert codes == [250, 250, 354, 451]
        await h.send_line("RSET")
        assert (await h.read_reply()).code == 250
    assert queued(config) == []  # the queue copy was not kept either
    assert os.listdir(config.server.queue_dir / "tmp") == []


async def test_dropped_connection_mid_data_stores_nothing(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<sales@example.test>\r\nDATA\r\n")
        await h.read_replies(3)
        await h.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 1000)
        await h.close()
        await h.wait_closed()
    assert messages(config, "alice") == [] and queued(config) == []
    assert os.listdir(config.maildir_path("alice") / "tmp") == []
    assert os.listdir(config.server.queue_dir / "tmp") == []


async def test_shutdown_lets_a_message_in_progress_finish(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        await h.read_replies(3)
        await h.send(b"Subject: slow\r\n\r\n")
        await anyio.sleep(0.05)
        h.request_shutdown()
        await h.send(b"rest\r\n.\r\n")
        assert (await h.read_reply()).code == 250
        closing = await h.read_reply()
        assert (closing.code, closing.enhanced) == (421, "4.3.2")
    assert len(messages(config, "bob")) == 1


async def test_command_timeout_closes_with_421(config: Config) -> None:
    state = harness_state(config)
    state.timeouts = type(state.timeouts)(command=0.2)
    async with Harness(smtp_session, "smtp", state=state, peer=STRANGER) as h:
        await ehlo(h)
        reply = await h.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        await h.wait_closed()


async def test_vrfy_noop_help_rset_quit(config: Config) -> None:
    out = await run_script(
        smtp_session,
        "smtp",
        b"HELO c.example\r\nVRFY alice\r\nNOOP\r\nHELP\r\nRSET\r\nQUIT\r\n",
        config=config,
        peer=STRANGER,
    )
    codes = [line[:3] for line in out.split(b"\r\n") if line]
    assert codes == [b"220", b"250", b"252", b"250", b"214", b"250", b"221"]


async def test_no_configuration_refuses() -> None:
    out = await run_script(smtp_session, "smtp", b"", peer=STRANGER)
    assert out.startswith(b"421 4.3.0")


async def test_cram_md5_without_shared_secret_is_no_counted_failure(config: Config) -> None:
    delays: list[float] = []

    class RecordingTracker(AuthFailureTracker):
        """Notes every failure delay the session asks for (instead of timing the reply)."""

        def delay_for(self, failures: int) -> float:
            delays.append(super().delay_for(failures))
            return delays[-1]

    tracker = RecordingTracker(max_failures=3, window=60, max_delay=5)
    state = harness_state(config, auth_failures=tracker)
    async with Harness(smtp_session, "submission", state=state, peer=LOOPBACK) as h:
        await ehlo(h)
        # alice has no shared secret: smtplib-style clients try CRAM-MD5 first, then PLAIN.
        await h.send_line("AUTH CRAM-MD5")
        challenge = base64.b64decode((await h.read_reply()).text)
        mac = hmac.new(b"whatever", challenge, hashlib.md5).hexdigest()
        await h.send_line(base64.b64encode(f"alice {mac}".encode()).decode())
        assert (await h.read_reply()).code == 535
        assert not any(delays)  # no failure delay
        assert tracker.failures(LOOPBACK.address) == 0
        # carol has one: a right digest logs in.
        await h.send_line("AUTH CRAM-MD5")
        challenge = base64.b64decode((await h.read_reply()).text)
        mac = hmac.new(CAROL_SECRET.encode(), challenge, hashlib.md5).hexdigest()
        await h.send_line(base64.b64encode(f"carol {mac}".encode()).decode())
        assert (await h.read_reply()).code == 235


async def test_at_info_a_session_logs_one_line_per_message_and_one_at_the_end(
    config: Config,
) -> None:
    # The connect line is debug-level: the disconnect line names the same peer and
    # session. A plain session with one message: "accepted", then "disconnect".
    with captured_log() as lines:
        logger = logging.getLogger("nosend")
        logger.setLevel(logging.INFO)
        async with Harness(smtp_session, "smtp", config=config, peer=LOOPBACK) as h:
            await ehlo(h)
            assert await transaction(h, "x@remote.example", ["alice@example.test"], BODY) == [
                250,
                250,
                354,
                250,
            ]
            await h.send_line("QUIT")
            await h.read_reply()
            await h.wait_closed()
    events = [line.split("event=")[1].split(" ")[0] for line in lines if "event=" in line]
    assert events == ["accepted", "disconnect"]
    assert all("peer=127.0.0.1:40001" in line for line in lines if "event=" in line)


async def test_log_lines_per_event_and_never_a_secret(config: Config) -> None:
    login_user = base64.b64encode(b"alice").decode()
    login_pass = base64.b64encode(PASSWORDS["alice"].encode()).decode()
    with captured_log() as lines:
        async with Harness(smtp_session, "submission", config=config, peer=LOOPBACK) as h:
            await ehlo(h)
            await h.send_line("AUTH PLAIN " + plain("alice", "Wrong-Guess-9"))
            assert (await h.read_reply()).code == 535
            await h.send_line("AUTH LOGIN")
            await h.read_reply()
            await h.send_line(login_user)
            await h.read_reply()
            await h.send_line(login_pass)
            assert (await h.read_reply()).code == 235
            codes = await transaction(
                h, "alice@example.test", ["bob@example.test", "x@remote.example"], BODY
            )
            assert codes == [250, 250, 250, 354, 250]
            await h.send_line("QUIT")
            await h.read_reply()
    text = "\n".join(lines)
    for secret in (
        PASSWORDS["alice"],
        login_pass,
        plain("alice"),
        "Wrong-Guess-9",
        plain("alice", "Wrong-Guess-9"),
    ):
        assert secret not in text
    events = [line.split("event=")[1].split(" ")[0] for line in lines if "event=" in line]
    assert events == ["connect", "helo", "auth_failed", "auth", "accepted", "quit", "disconnect"]
    accepted = next(line for line in lines if "event=accepted" in line)
    for field in (
        "user=alice",
        "peer=127.0.0.1:40001",
        "message_id=<m1@client.example>",
        "rcpts=2",
        "local=1",
        "queued=1",
        "size=",
        "result=250",
    ):
        assert field in accepted


async def test_refused_bdat_chunks_leave_nothing_behind(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        # BDAT before any recipient: the octets are read and dropped, 554/503.
        await h.send(b"MAIL FROM:<s@remote.example>\r\nBDAT 5\r\nabcde")
        mail, bdat = await h.read_replies(2)
        assert mail.code == 250 and bdat.code in (503, 554)
        await h.send(b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [r.code for r in await h.read_replies(2)] == [250, 354]
        await h.send(BODY + b".\r\n")
        assert (await h.read_reply()).code == 250
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await h.read_reply()
        await h.send_line("HELO client.example")  # no CHUNKING without EHLO
        await h.read_reply()
        await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<bob@example.test>\r\n")
        await h.read_replies(2)
        await h.send(b"BDAT 5 LAST\r\nabcde")
        assert (await h.read_reply()).code == 502
        await h.send_line("QUIT")
        assert (await h.read_reply()).code == 221
    assert len(messages(config, "alice")) == 1 and messages(config, "bob") == []
    for name in ("alice", "bob"):
        assert os.listdir(config.maildir_path(name) / "tmp") == []


async def test_too_many_protocol_errors_close_with_421(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await ehlo(h)
        await h.send(b"BOGUS\r\n" * 12)
        replies = [await h.read_reply() for _ in range(10)]
        assert [r.code for r in replies[:9]] == [500] * 9
        assert (replies[9].code, replies[9].enhanced) == (421, "4.7.0")
        assert await h.wait_closed() == b""


async def test_smtps_submission_offers_auth_at_once(config: Config, tls_cert: CertFiles) -> None:
    context = server_context(tls_cert.cert, tls_cert.key)
    async with Harness(
        smtp_session, "smtps", config=config, peer=STRANGER, server_ssl=context
    ) as h:
        lines = await ehlo(h)
        assert "AUTH PLAIN LOGIN CRAM-MD5" in lines and "STARTTLS" not in lines
        await h.send_line("MAIL FROM:<bob@example.test>")
        assert (await h.read_reply()).code == 530
        await h.send_line("AUTH PLAIN " + plain("bob"))
        assert (await h.read_reply()).code == 235
        codes = await transaction(h, "bob@example.test", ["alice@example.test"], BODY)
        assert codes == [250, 250, 354, 250]
    [alice] = messages(config, "alice")
    assert b"with ESMTPSA (TLSv1." in alice


async def test_notify_success_reports_local_delivery(config: Config) -> None:
    async with Harness(smtp_session, "smtp", config=config, peer=TRUSTED) as h:
        await ehlo(h)
        await h.send(
            b"MAIL FROM:<x@remote.example> ENVID=env-1\r\n"
            b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.test\r\n"
            b"RCPT TO:<team@example.test> NOTIFY=SUCCESS,FAILURE\r\n"
            b"RCPT TO:<carol@example.test> NOTIFY=FAILURE\r\n"
            b"RCPT TO:<far@remote.example> NOTIFY=SUCCESS\r\n"
            b"DATA\r\n"
        )
        assert [r.code for r in await h.read_replies(6)] == [250] * 5 + [354]
        await h.send(BODY + b".\r\n")
        assert (await h.read_reply()).code == 250
    reports = [(e, c) for e, c in queued(config) if e.sender == ""]
    [(entry, report)] = reports
    assert [(r.address, r.notify) for r in entry.recipients] == [("x@remote.example", ("NEVER",))]
    assert b"Original-Envelope-Id: env-1" in report
    assert b"Final-Recipient: rfc822; bob@example.test\nAction: delivered\nStatus: 2.0.0" in report
    assert b"Original-Recipient: rfc822;bob@example.test" in report
    assert b"Final-Recipient: rfc822; team@example.test\nAction: expanded" in report
    assert b"carol@example.test" not in report.split(b"text/rfc822-headers")[0]
    assert b"far@remote.example" not in report  # the queue reports on relayed mail
    assert b"Content-Type: text/rfc822-headers" in report and b"Hello" not in report
    # The relayed recipient keeps its NOTIFY for the transport's report.
    [relayed] = [e for e, _ in queued(config) if e.sender]
    assert relayed.recipients[0].notify == ("SUCCESS",)


async def test_notify_success_to_a_local_sender_and_never_for_null_sender(
    config: Config,
) -> None:
    async with Harness(smtp_session, "submission", config=config, peer=LOOPBACK) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("alice"))
        await h.read_reply()
        await h.send(
            b"MAIL FROM:<alice@example.test> RET=FULL\r\n"
            b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\nDATA\r\n"
        )
        assert [r.code for r in await h.read_replies(3)] == [250, 250, 354]
        await h.send(BODY + b".\r\n")
        assert (await h.read_reply()).code == 250
        await h.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\nDATA\r\n")
        assert [r.code for r in await h.read_replies(3)] == [250, 250, 354]
        await h.send(BODY + b".\r\n")
        assert (await h.read_reply()).code == 250
    [report] = messages(config, "alice")
    assert report.startswith(b"Return-Path: <>\n")
    assert b"Action: delivered" in report and b"Content-Type: message/rfc822" in report
    assert b"Hello" in report  # RET=FULL
    assert len(messages(config, "bob")) == 2 and queued(config) == []


async def test_added_fields_are_reproducible_with_a_fixed_clock_and_nonce(
    config: Config,
) -> None:
    async with Harness(
        smtp_session,
        "submission",
        config=config,
        peer=LOOPBACK,
        clock=lambda: FIXED_TIME,
        nonce=lambda: "feedfacefeedface0000",
    ) as h:
        await ehlo(h)
        await h.send_line("AUTH PLAIN " + plain("bob"))
        await h.read_reply()
        codes = await transaction(h, "bob@example.test", ["alice@example.test"], b"x: y\r\n\r\n")
        assert codes == [250, 250, 354, 250]
    [alice] = messages(config, "alice")
    date = format_datetime(datetime.fromtimestamp(FIXED_TIME).astimezone())
    assert f"\nDate: {date}\n".encode() in alice
    assert b"\nMessage-ID: <695735a5.feedfacefeedface.feedfacefeedface@mx.test>\n" in alice
