"""The relay against a scripted smarthost: per-recipient answers, SIZE, line ends, limits.

The smarthost here is :class:`~tests.link.relay_support.ScriptedSMTP` (PIPELINING, SIZE,
no TLS, no AUTH), so that a test can choose 4xx and 5xx answers and stall a message.
"""

from __future__ import annotations

from pathlib import Path

from nosend_link.relay import TimeLimit, relay_order, size_class
from nosend_link.transfer_events import (
    MessageDone,
    TransferEvent,
    TransferFinished,
    TransferStarted,
)
from nosend_runners.client.connection import LinkMeter
from nosend_store.config import Config
from nosend_store.maildir import MaildirMailbox
from tests.link.link_proxy import LinkProxy
from tests.link.relay_support import (
    FAST,
    ScriptedSMTP,
    boat_config,
    enqueue,
    entries,
    message,
    relay,
)


def _reports(config: Config, mailbox: str = "skipper") -> list[bytes]:
    box = MaildirMailbox(config.maildir_path(mailbox))
    out = []
    for msg in box.list_messages():
        with box.open_message(msg.key) as handle:
            out.append(handle.read())
    return out


def _answers(address: str) -> str:
    if address.startswith("later"):
        return "451 4.3.0 try again later"
    if address.startswith("bad"):
        return "550 5.1.1 no such user"
    return "250 2.1.5 ok"


def test_2xx_delivered_4xx_deferred_5xx_failed_with_a_report(tmp_path: Path) -> None:
    with ScriptedSMTP(_answers) as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        mixed = enqueue(config, message(1), ["ok@far.test", "later@far.test", "bad@far.test"])
        doomed = enqueue(config, message(2), ["bad@far.test"])
        events: list[TransferEvent] = []
        report = relay(config, events=events, message_timeout=FAST)
    assert report.ok, report
    assert (report.sent, report.deferred, report.failed) == (1, 1, 2)
    # The accepted recipient got the body once; the refused ones never did.
    assert [rcpts for rcpts, _ in server.received] == [["ok@far.test"]]
    [left] = entries(config)
    assert left.id == mixed
    states = {r.address: r.state for r in left.recipients}
    assert states == {"ok@far.test": "delivered", "later@far.test": "pending",
                      "bad@far.test": "failed"}
    assert left.attempts == 1 and left.next_attempt > left.created  # the queue's backoff
    assert doomed not in {e.id for e in entries(config)}
    # The all-failed message left the queue with an RFC 3464 report to its sender.
    [dsn] = _reports(config)
    assert b"multipart/report" in dsn and b"report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; bad@far.test" in dsn and b"Status: 5.1.1" in dsn
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "TransferStarted" and kinds[-1] == "TransferFinished"
    outcomes = sorted(e.outcome for e in events if isinstance(e, MessageDone))
    assert outcomes == ["refused", "sent"]
    assert isinstance(events[0], TransferStarted) and events[0].messages == 2
    assert isinstance(events[-1], TransferFinished) and events[-1].ok


def test_bare_lf_and_cr_in_a_stored_message_go_out_as_crlf_only(tmp_path: Path) -> None:
    with ScriptedSMTP() as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        enqueue(config, b"Subject: ends\n\nlf only\nbare\rcr\r\ncrlf\r\n.dot\nlast")
        report = relay(config, message_timeout=FAST)
    assert report.ok and report.sent == 1
    [(_, body)] = server.received
    assert body.replace(b"\r\n", b"") .count(b"\r") == 0
    assert body.replace(b"\r\n", b"").count(b"\n") == 0
    assert body == b"Subject: ends\r\n\r\nlf only\r\nbare\r\ncr\r\ncrlf\r\n..dot\r\nlast\r\n"


def test_over_the_servers_size_fails_before_the_body_is_sent(tmp_path: Path) -> None:
    big = message(1, size=50_000)
    with ScriptedSMTP(size=10_000) as server, LinkProxy("127.0.0.1", server.port) as proxy:
        config = boat_config(tmp_path, proxy.port, tls="none", user=None)
        enqueue(config, big)
        small = enqueue(config, message(2))
        meter = LinkMeter()
        report = relay(config, meter=meter, message_timeout=FAST)
        up = proxy.counters.snapshot()["bytes_up"]
    assert report.ok and (report.sent, report.failed) == (1, 1)
    assert [b"note 2" in body for _, body in server.received] == [True]
    assert up < 5_000 and meter.bytes_sent == up  # the 50 KB body never crossed
    assert entries(config) == [] and small
    [dsn] = _reports(config)
    assert b"Status: 5.3.4" in dsn


def test_over_the_links_cap_stays_queued_untouched(tmp_path: Path) -> None:
    with ScriptedSMTP() as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        big = enqueue(config, message(1, size=30_000))
        enqueue(config, message(2))
        report = relay(config, link_max_size=20_000, message_timeout=FAST)
    assert report.ok and (report.sent, report.skipped) == (1, 1)
    [left] = entries(config)
    assert left.id == big and left.attempts == 0 and left.last_error is None
    assert _reports(config) == []


def test_a_stalled_message_is_deferred_and_the_rest_goes_on_a_new_connection(
    tmp_path: Path,
) -> None:
    with ScriptedSMTP(stall_subject=b"Subject: note 2") as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        for n in (1, 2, 3):
            enqueue(config, message(n))
        report = relay(config, message_timeout=TimeLimit(base=1.0, min_rate=100_000.0))
        server.close()
    assert report.ok, report
    assert report.connections == 2 and server.connections == 2
    assert (report.sent, report.deferred) == (2, 1)
    subjects = sorted(b"note 1" in body or b"note 3" in body for _, body in server.received)
    assert subjects == [True, True]
    [left] = entries(config)
    assert left.attempts == 1 and "time limit" in (left.last_error or "")


def test_order_is_size_class_then_age() -> None:
    assert [size_class(n) for n in (0, 16384, 16385, 65536, 65537, 1 << 20, 5 << 20)] == [
        0, 0, 1, 1, 2, 3, 5]

    class E:
        def __init__(self, i: str, size: int, created: float) -> None:
            self.id, self.wire_size, self.created = i, size, created

    queue = [E("big-old", 900_000, 1.0), E("small-new", 2_000, 9.0), E("small-old", 9_000, 2.0),
             E("mid", 40_000, 0.5)]
    ordered = sorted(queue, key=relay_order)  # type: ignore[arg-type]
    assert [e.id for e in ordered] == ["small-old", "small-new", "mid", "big-old"]


def test_a_lock_step_server_gets_every_message_one_command_at_a_time(tmp_path: Path) -> None:
    with ScriptedSMTP(pipelining=False) as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        for n in (1, 2, 3):
            enqueue(config, message(n), ["a@far.test", "b@far.test"])
        report = relay(config, message_timeout=FAST)
    assert report.ok and report.sent == 3 and entries(config) == []
    assert [rcpts for rcpts, _ in server.received] == [["a@far.test", "b@far.test"]] * 3
    # MAIL, two RCPTs, DATA and the body each wait for their reply: five per message.
    assert report.round_trips >= 3 * 5


def test_a_sender_refused_for_now_defers_the_message_whatever_rcpt_said(
    tmp_path: Path,
) -> None:
    """Pipelined: MAIL gets 451 and the RCPTs then get 503. The 503s only echo the
    refused MAIL (RFC 5321 section 4.2.4); nothing may fail for good."""
    with ScriptedSMTP(mail="451 4.7.1 greylisted, come back later") as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        enqueue(config, message(1), ["a@far.test", "b@far.test"])
        report = relay(config, message_timeout=FAST)
    assert report.ok and (report.sent, report.deferred, report.failed) == (0, 1, 0)
    [left] = entries(config)
    assert [r.state for r in left.recipients] == ["pending", "pending"]
    assert "greylisted" in (left.last_error or "") and _reports(config) == []


def test_a_sender_refused_for_good_fails_the_message_with_the_mail_reply(
    tmp_path: Path,
) -> None:
    with ScriptedSMTP(mail="553 5.7.1 sender not allowed") as server:
        config = boat_config(tmp_path, server.port, tls="none", user=None)
        enqueue(config, message(1), ["a@far.test"])
        report = relay(config, message_timeout=FAST)
    assert report.ok and report.failed == 1 and entries(config) == []
    [dsn] = _reports(config)
    assert b"553 5.7.1 sender not allowed" in dsn and b"503" not in dsn
