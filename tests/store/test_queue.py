"""Outbound queue: durable enqueue, claims, per-recipient results, retries, expiry."""

from __future__ import annotations

import email
import email.policy
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import (
    Envelope,
    MaildirBounceSink,
    OutboundQueue,
    QueueEntry,
    Recipient,
    RecipientResult,
    RetryPolicy,
)

MSG = [b"From: alice@yacht.local\r\n", b"Subject: hi\r\n\r\n", b"hello\r\n"]


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Sink:
    """Delivers notifications into per-recipient Maildirs, like the real server would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []

    def __call__(self, rcpt: str, chunks: Iterable[bytes]) -> None:
        self.calls.append(rcpt)
        MaildirMailbox(self.root / rcpt).deliver(chunks)

    def messages(self, rcpt: str) -> list[email.message.EmailMessage]:
        mb = MaildirMailbox(self.root / rcpt)
        out = []
        for m in mb.list_messages():
            with mb.open_message(m.key) as f:
                out.append(email.message_from_binary_file(f, policy=email.policy.default))
        return out  # type: ignore[return-value]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return Sink(tmp_path / "boxes")


@pytest.fixture
def queue(tmp_path: Path, clock: Clock, sink: Sink) -> OutboundQueue:
    return OutboundQueue(tmp_path / "queue", clock=clock, bounce_sink=sink, hostname="yacht")


def test_enqueue_is_visible_with_envelope_and_sizes(queue: OutboundQueue, clock: Clock) -> None:
    env = Envelope(
        "alice@yacht.local",
        (Recipient("bob@example.org", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;bob@ex"),),
        ret="HDRS",
        envid="env-1",
        body="8BITMIME",
    )
    qid = queue.enqueue(env, MSG)
    [entry] = queue.entries()
    assert entry.id == qid
    assert entry.envelope == env
    assert entry.created == clock.t and entry.next_attempt == clock.t
    assert entry.wire_size == sum(map(len, MSG))
    assert entry.disk_size == entry.wire_size - 4  # four CRLF became LF
    claim = queue.claim(qid)
    assert claim is not None
    with claim:
        assert b"".join(claim.wire_chunks()) == b"".join(MSG)
    assert QueueEntry.from_json(entry.to_json()) == entry


def test_empty_envelope_is_refused(queue: OutboundQueue) -> None:
    with pytest.raises(ValueError):
        queue.enqueue(Envelope("a@b", ()), MSG)
    assert queue.entries() == []
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


def test_aborted_enqueue_leaves_nothing(queue: OutboundQueue) -> None:
    def broken() -> Iterable[bytes]:
        yield b"partial\r\n"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        queue.enqueue(Envelope.simple("a@b", ["c@d"]), broken())
    assert queue.entries() == []
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


def test_claim_is_exclusive_across_threads_and_objects(
    queue: OutboundQueue, tmp_path: Path
) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    first = queue.claim(qid)
    assert first is not None
    assert queue.claim(qid) is None
    assert OutboundQueue(tmp_path / "queue").claim(qid) is None
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(queue.claim(qid)))
    t.start()
    t.join()
    assert results == [None]
    first.release()
    again = queue.claim(qid)
    assert again is not None
    again.release()


def test_all_delivered_removes_without_notification(queue: OutboundQueue, sink: Sink) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d", "e@f"]), MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("c@d", RecipientResult.delivered("250 ok", "smtp.isp"))
    claim.record("e@f", RecipientResult.delivered("250 ok", "smtp.isp"))
    outcome = claim.finish()
    assert outcome.removed and outcome.notified == ()
    assert queue.entries() == [] and queue.claim(qid) is None
    assert sink.calls == []


def test_partial_delivery_keeps_pending_recipients_and_backs_off(
    queue: OutboundQueue, clock: Clock
) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d", "e@f"]), MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("c@d", RecipientResult.delivered())
    claim.record("e@f", RecipientResult.deferred("451 4.3.0 try later", "smtp.isp"))
    outcome = claim.finish()
    assert not outcome.removed
    entry = queue.get(qid)
    assert entry is not None
    assert [r.state for r in entry.recipients] == ["delivered", "pending"]
    assert entry.attempts == 1 and entry.last_error == "451 4.3.0 try later"
    assert entry.next_attempt == clock.t + 300
    assert queue.due() == []
    assert [e.id for e in queue.due(clock.t + 300)] == [qid]
    # Second failure doubles the wait; the delivered recipient is not sent again.
    clock.t += 300
    claim = queue.claim(qid)
    assert claim is not None
    assert [r.address for r in claim.entry.pending] == ["e@f"]
    with pytest.raises(KeyError):
        claim.record("c@d", RecipientResult.delivered())
    claim.record("e@f", RecipientResult.deferred("421 busy"))
    claim.finish()
    entry = queue.get(qid)
    assert entry is not None and entry.attempts == 2 and entry.next_attempt == clock.t + 600


def test_retry_policy_caps_the_interval() -> None:
    p = RetryPolicy(first_retry=60, factor=3, max_interval=1000)
    assert [p.delay(n) for n in range(0, 6)] == [0, 60, 180, 540, 1000, 1000]


def test_release_without_results_changes_nothing(queue: OutboundQueue) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    before = queue.get(qid)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("c@d", RecipientResult.delivered())
    claim.release()
    assert queue.get(qid) == before


def test_permanent_failure_sends_rfc3464_report_to_sender(
    queue: OutboundQueue, sink: Sink, clock: Clock
) -> None:
    env = Envelope(
        "alice@yacht.local",
        (
            Recipient("bob@example.org", orcpt="rfc822;Bob@Example.org"),
            Recipient("carol@example.org"),
        ),
        envid="QX1",
    )
    qid = queue.enqueue(env, MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("bob@example.org", RecipientResult.failed("550 5.1.1 no such user", "mx.ex"))
    claim.record("carol@example.org", RecipientResult.delivered())
    outcome = claim.finish()
    assert outcome.removed and outcome.notified == ("bob@example.org",)
    assert queue.entries() == []
    [report] = sink.messages("alice@yacht.local")
    assert str(report["To"]) == "alice@yacht.local"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, original = report.iter_parts()
    assert "bob@example.org" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    blocks = [dict(b.items()) for b in status.get_payload()]
    assert blocks[0]["Reporting-MTA"] == "dns; yacht"
    assert blocks[0]["Original-Envelope-Id"] == "QX1"
    assert blocks[1]["Final-Recipient"] == "rfc822; bob@example.org"
    assert blocks[1]["Original-Recipient"] == "rfc822;Bob@Example.org"
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.1.1"
    assert blocks[1]["Remote-MTA"] == "dns; mx.ex"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert len(blocks) == 2  # carol was delivered: not reported
    assert original.get_content_type() == "message/rfc822"
    inner = original.get_payload()[0]
    assert inner["Subject"] == "hi" and inner.get_content().strip() == "hello"


def test_headers_only_when_ret_hdrs(queue: OutboundQueue, sink: Sink) -> None:
    env = Envelope("a@y", (Recipient("b@x"),), ret="HDRS")
    qid = queue.enqueue(env, MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.failed("554 no"))
    claim.finish()
    [report] = sink.messages("a@y")
    *_, original = report.iter_parts()
    assert original.get_content_type() == "text/rfc822-headers"
    assert "Subject: hi" in original.get_content()
    assert "hello" not in original.get_content()


@pytest.mark.parametrize(
    ("sender", "notify"), [("", ()), ("a@y", ("NEVER",)), ("a@y", ("SUCCESS",))]
)
def test_no_report_for_null_sender_or_notify_without_failure(
    queue: OutboundQueue, sink: Sink, sender: str, notify: tuple[str, ...]
) -> None:
    qid = queue.enqueue(Envelope(sender, (Recipient("b@x", notify=notify),)), MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.failed("550 no"))
    assert claim.finish().removed
    assert sink.calls == []


def test_relayed_report_for_notify_success_to_non_dsn_hop(queue: OutboundQueue, sink: Sink) -> None:
    qid = queue.enqueue(Envelope("a@y", (Recipient("b@x", notify=("SUCCESS",)),)), MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.delivered("250 ok", "isp", relayed=True))
    claim.finish()
    [report] = sink.messages("a@y")
    blocks = [dict(b.items()) for b in list(report.iter_parts())[1].get_payload()]
    assert (blocks[1]["Action"], blocks[1]["Status"]) == ("relayed", "2.0.0")


def test_expiry_after_five_days_by_default(queue: OutboundQueue, sink: Sink, clock: Clock) -> None:
    qid = queue.enqueue(Envelope.simple("a@y", ["b@x"]), MSG)
    clock.t += 5 * 86400 - 1
    assert queue.maintain() == []
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.deferred("421 4.4.2 link down"))
    assert not claim.finish().removed
    clock.t += 1
    [outcome] = queue.maintain()  # no link ever came up: expiry still happens
    assert outcome.removed and outcome.notified == ("b@x",)
    [report] = sink.messages("a@y")
    blocks = [dict(b.items()) for b in list(report.iter_parts())[1].get_payload()]
    assert (blocks[1]["Action"], blocks[1]["Status"]) == ("failed", "4.4.7")
    assert blocks[1]["Diagnostic-Code"] == "smtp; 421 4.4.2 link down"
    assert "Last-Attempt-Date" in blocks[1]


def test_expiry_is_configurable(tmp_path: Path, clock: Clock, sink: Sink) -> None:
    q = OutboundQueue(
        tmp_path / "q", clock=clock, bounce_sink=sink, policy=RetryPolicy(expire_after=3600)
    )
    q.enqueue(Envelope.simple("a@y", ["b@x"]), MSG)
    clock.t += 3600
    assert [o.removed for o in q.maintain()] == [True]
    assert sink.calls == ["a@y"]


def test_failing_sink_keeps_message_until_notification_is_delivered(
    tmp_path: Path, clock: Clock, sink: Sink
) -> None:
    broken = True

    def flaky(rcpt: str, chunks: Iterable[bytes]) -> None:
        if broken:
            raise OSError("disk full")
        sink(rcpt, chunks)

    q = OutboundQueue(tmp_path / "q", clock=clock, bounce_sink=flaky)
    qid = q.enqueue(Envelope.simple("a@y", ["b@x"]), MSG)
    claim = q.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.failed("550 no"))
    outcome = claim.finish()
    assert not outcome.removed and outcome.notify_error
    entry = q.get(qid)
    assert entry is not None and entry.notify_pending and entry.pending == ()
    broken = False
    [outcome] = q.maintain()
    assert outcome.removed and sink.calls == ["a@y"]
    assert q.entries() == []


def test_claim_of_an_entry_removed_while_waiting_fails(queue: OutboundQueue) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    holder = queue.claim(qid)
    assert holder is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(queue.claim(qid, timeout=5)))
    waiter.start()
    holder.record("c@d", RecipientResult.delivered())
    holder.finish()
    waiter.join()
    assert got == [None]


def test_claim_due_skips_claimed_and_future_entries(queue: OutboundQueue, clock: Clock) -> None:
    a = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    b = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    c = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    held = queue.claim(a)
    assert held is not None
    later = queue.claim(c)
    assert later is not None
    later.record("c@d", RecipientResult.deferred("451 later"))
    later.finish()
    claims = list(queue.claim_due())
    assert [cl.id for cl in claims] == [b]
    for cl in claims:
        cl.release()
    held.release()
    assert [e.id for e in queue.entries()] == [a, b, c]


def test_delay_warning_once_for_notify_delay_only(
    queue: OutboundQueue, sink: Sink, clock: Clock
) -> None:
    qid = queue.enqueue(
        Envelope(
            "a@y",
            (
                Recipient("b@x", notify=("DELAY", "FAILURE")),
                Recipient("c@x"),  # no NOTIFY given: no delay warning
            ),
        ),
        MSG,
    )
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("b@x", RecipientResult.deferred("451 4.4.1 no answer", "mx.x"))
    claim.record("c@x", RecipientResult.deferred("451 4.4.1 no answer", "mx.x"))
    assert claim.finish().notified == ()  # too early
    clock.t += 4 * 3600
    [outcome] = queue.maintain()
    assert not outcome.removed and outcome.notified == ("b@x",)
    assert queue.maintain() == []  # only once
    entry = queue.get(qid)
    assert entry is not None and [r.delay_notified for r in entry.recipients] == [True, False]
    [report] = sink.messages("a@y")
    assert report["Subject"].startswith("Delayed Mail")
    blocks = [dict(b.items()) for b in list(report.iter_parts())[1].get_payload()]
    assert [b.get("Final-Recipient") for b in blocks[1:]] == ["rfc822; b@x"]
    assert (blocks[1]["Action"], blocks[1]["Status"]) == ("delayed", "4.4.1")
    assert "Will-Retry-Until" in blocks[1]


def test_reschedule_and_peek_without_claim(queue: OutboundQueue, clock: Clock) -> None:
    qid = queue.enqueue(Envelope.simple("a@b", ["c@d"]), MSG)
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("c@d", RecipientResult.deferred("451 later"))
    claim.finish()
    assert queue.due() == []
    claim = queue.claim(qid)
    assert claim is not None
    claim.reschedule(0.0)
    claim.release()
    assert [e.id for e in queue.due()] == [qid]
    with queue.open_message(qid) as f:
        assert f.readline() == b"From: alice@yacht.local\n"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    sender=_text,
    recipients=st.lists(
        st.builds(
            Recipient,
            address=_text,
            notify=st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY", "NEVER"])).map(tuple),
            orcpt=st.none() | _text,
            state=st.sampled_from(["pending", "delivered", "failed"]),
            reply=st.none() | _text,
        ),
        min_size=1,
        max_size=4,
    ),
    envid=st.none() | _text,
    attempts=st.integers(0, 1000),
    last_error=st.none() | _text,
)
def test_entry_json_round_trip(
    sender: str,
    recipients: list[Recipient],
    envid: str | None,
    attempts: int,
    last_error: str | None,
) -> None:
    # Internationalised addresses (RFC 6531) and odd replies must survive the disk.
    entry = QueueEntry(
        id="1.M2P3Q4R00000000.h",
        envelope=Envelope(sender, tuple(recipients), ret="FULL", envid=envid, smtputf8=True),
        created=1.5,
        disk_size=10,
        wire_size=12,
        attempts=attempts,
        last_error=last_error,
    )
    assert QueueEntry.from_json(entry.to_json()) == entry


def test_clean_tmp_removes_interrupted_removals_at_once(queue: OutboundQueue) -> None:
    leftover = os.path.join(queue.path, "tmp", "123.done.456")
    os.mkdir(leftover)
    with open(os.path.join(leftover, "message"), "wb") as f:
        f.write(b"x")
    fresh_staging = os.path.join(queue.path, "tmp", "789")
    os.mkdir(fresh_staging)
    assert queue.clean_tmp() == 1
    assert os.listdir(os.path.join(queue.path, "tmp")) == ["789"]


def test_maildir_bounce_sink_local_sender_remote_sender_and_loop_guard(
    tmp_path: Path, clock: Clock
) -> None:
    boxes = {"alice@yacht": tmp_path / "alice"}
    outq = OutboundQueue(tmp_path / "out", clock=clock)
    q = OutboundQueue(
        tmp_path / "q",
        clock=clock,
        bounce_sink=MaildirBounceSink(boxes.get, queue=outq),
    )
    for sender in ("alice@yacht", "zed@elsewhere"):
        qid = q.enqueue(Envelope.simple(sender, ["b@x"]), MSG)
        claim = q.claim(qid)
        assert claim is not None
        claim.record("b@x", RecipientResult.failed("550 no"))
        assert claim.finish().removed
    [local] = MaildirMailbox(tmp_path / "alice").list_messages()
    assert local.size > 0
    [remote] = outq.entries()
    assert remote.sender == ""  # reports travel with the null sender
    assert [(r.address, r.notify) for r in remote.recipients] == [("zed@elsewhere", ("NEVER",))]
    # That report failing in turn produces no further report (no loop).
    sink_calls: list[str] = []
    outq2 = OutboundQueue(outq.path, clock=clock, bounce_sink=lambda r, c: sink_calls.append(r))
    claim = outq2.claim(remote.id)
    assert claim is not None
    claim.record("zed@elsewhere", RecipientResult.failed("550 no"))
    assert claim.finish().removed and sink_calls == []
