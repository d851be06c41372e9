"""The wall clock jumping backwards and forwards under the store: the queue keeps
retrying and still expires, and Maildir names stay unique. Queue times are wall-clock
seconds because they outlive the process; every test injects the clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nosend_store._durable import UniqueNamer
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, RecipientResult, RetryPolicy

T = 1_800_000_000.0  # 2027-01-15
YEAR = 365 * 86400.0
MESSAGE = b"Subject: clock\r\n\r\nbody\r\n"


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def queue_with_one_attempt(tmp_path: Path, clock: Clock) -> tuple[OutboundQueue, str]:
    queue = OutboundQueue(tmp_path / "queue", clock=clock, policy=RetryPolicy())
    qid = queue.enqueue(Envelope.simple("s@example.test", ["r@remote.test"]), [MESSAGE])
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("r@remote.test", RecipientResult.deferred("451 4.4.1 no answer"))
    outcome = claim.finish()
    assert outcome.next_attempt == T + 300.0
    return queue, qid


def test_clock_back_does_not_stop_retries(tmp_path: Path) -> None:
    clock = Clock(T)
    queue, qid = queue_with_one_attempt(tmp_path, clock)
    assert queue.due() == []  # the 5 minutes of backoff
    clock.now = T - YEAR  # the clock goes back a year (a dead RTC battery, a bad GPS)
    assert [e.id for e in queue.due()] == [qid]
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("r@remote.test", RecipientResult.deferred("451 4.4.1 no answer"))
    outcome = claim.finish()
    # Rescheduled from the clock as it now is: the backoff holds again.
    assert outcome.next_attempt == clock.now + 600.0
    assert queue.due() == []
    clock.now += 600.0
    assert [e.id for e in queue.due()] == [qid]


def test_clock_back_does_not_stop_expiry(tmp_path: Path) -> None:
    clock = Clock(T)
    queue, qid = queue_with_one_attempt(tmp_path, clock)
    clock.now = T - YEAR
    # A housekeeping pass (no link needed) moves the arrival time to now...
    queue.maintain()
    entry = queue.get(qid)
    assert entry is not None and entry.created == T - YEAR and entry.pending
    # ...so the message expires expire_after from here, not a year and 5 days later.
    clock.now += RetryPolicy().expire_after
    queue.maintain()
    assert queue.get(qid) is None  # expired; no sender report sink here, so removed


def test_clock_forward_retries_at_once(tmp_path: Path) -> None:
    clock = Clock(T)
    queue, qid = queue_with_one_attempt(tmp_path, clock)
    clock.now = T + 3600.0
    assert [e.id for e in queue.due()] == [qid]


def test_names_stay_unique_when_the_clock_goes_back(tmp_path: Path) -> None:
    clock = Clock(T)
    namer = UniqueNamer("host", clock=clock)
    names = set()
    for step in range(50):
        clock.now = T - step * 1000.0 if step % 2 else T  # back and forth, same instants
        names.add(namer.new_name())
    assert len(names) == 50
    box = MaildirMailbox(tmp_path / "anna", clock=clock)
    clock.now = T
    first = box.deliver_bytes(MESSAGE)
    clock.now = T - YEAR
    second = box.deliver_bytes(MESSAGE)
    assert first != second and len(box.list_messages()) == 2


def test_clean_tmp_after_a_jump(tmp_path: Path) -> None:
    clock = Clock(T)
    box = MaildirMailbox(tmp_path / "anna", clock=clock)
    writer = box.open_writer()  # a delivery in progress: its tmp/ file is fresh
    writer.write(MESSAGE)
    clock.now = 0.0  # far back: nothing looks old, nothing is removed
    assert box.clean_tmp() == 0
    writer.commit()  # the delivery was not disturbed
    assert len(box.list_messages()) == 1


def test_clean_tmp_after_a_jump_forward_never_leaves_a_half_delivery(tmp_path: Path) -> None:
    clock = Clock(T)
    box = MaildirMailbox(tmp_path / "anna", clock=clock)
    writer = box.open_writer()
    writer.write(MESSAGE)
    clock.now = time.time() + 3 * 86400.0  # the tmp/ file now looks three days old
    assert box.clean_tmp() == 1
    with pytest.raises(FileNotFoundError):
        writer.commit()  # not published, so never acknowledged: the client retries
    assert box.list_messages() == []


def test_clock_forward_past_expiry_reports_to_the_sender_never_drops_silently(
    tmp_path: Path,
) -> None:
    # The documented cost of a jump forwards (docs/architecture.md, "The clock jumping"):
    # expiry may come early, and the sender gets the failure report.
    reports: list[tuple[str, bytes]] = []
    clock = Clock(T)
    queue = OutboundQueue(tmp_path / "queue", clock=clock, policy=RetryPolicy(),
                          bounce_sink=lambda rcpt, chunks: reports.append(
                              (rcpt, b"".join(chunks))))
    qid = queue.enqueue(Envelope.simple("s@example.test", ["r@remote.test"]), [MESSAGE])
    clock.now = T + RetryPolicy().expire_after + 3600.0
    queue.maintain()
    assert queue.get(qid) is None
    [(rcpt, report)] = [r for r in reports if b"failed" in r[1].lower()]
    assert rcpt == "s@example.test" and b"r@remote.test" in report
