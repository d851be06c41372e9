"""Audit regressions for the outbound queue and its POP3 drop: what a failure half-way
through a commit leaves behind, and what the queue drop may remove."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import nosend_store.queue as queue_module
from nosend_store.queue import Envelope, OutboundQueue

MSG = [b"From: alice@yacht.local\r\n", b"Subject: hi\r\n\r\n", b"hello\r\n"]


def test_enqueue_failing_after_the_rename_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync of active/ fails (EIO, ENOSPC on some filesystems) after the entry was renamed
    # in: the caller is told the enqueue failed (the SMTP client gets 451 and retries), so
    # the entry must not stay in active/ to be sent as well -- that would send it twice.
    queue = OutboundQueue(tmp_path / "queue", hostname="yacht")
    real = queue_module.fsync_dir

    def failing(path: str | os.PathLike[str]) -> None:
        if os.fspath(path).endswith("active"):
            raise OSError(errno.EIO, "I/O error")
        real(path)

    monkeypatch.setattr(queue_module, "fsync_dir", failing)
    writer = queue.open_writer(Envelope.simple("a@yacht.local", ["b@far.example"]))
    for chunk in MSG:
        writer.write(chunk)
    with pytest.raises(OSError):
        writer.commit()
    monkeypatch.setattr(queue_module, "fsync_dir", real)
    assert queue.ids() == []
    assert os.listdir(tmp_path / "queue" / "active") == []
    queue.clean_tmp()
    assert os.listdir(tmp_path / "queue" / "tmp") == []


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


DAY = 86400.0


def test_queue_drop_does_not_expire_with_its_own_default_policy(tmp_path: Path) -> None:
    # The POP3 session opens the drop over a queue with the default policy (5 days) and
    # no bounce sink. A site that keeps mail 10 days (its housekeeping uses that policy)
    # must not lose a recipient the collector did not take: it used to be expired there,
    # its failure report dropped for want of a sink, and the entry removed.
    from nosend_store.queue_drop import QueueDrop

    clock = Clock()
    site = OutboundQueue(
        tmp_path / "q",
        clock=clock,
        hostname="yacht",
        policy=queue_module.RetryPolicy(expire_after=10 * DAY),
    )
    qid = site.enqueue(Envelope.simple("a@yacht", ["b@x.org", "c@y.org"]), MSG)
    clock.t += 6 * DAY
    drop_queue = OutboundQueue(tmp_path / "q", clock=clock, hostname="yacht")
    with QueueDrop(drop_queue).pop3_session() as session:
        assert session.recipients(1) == ("b@x.org",)
        session.mark_deleted(1)
        session.commit()
    entry = site.get(qid)
    assert entry is not None
    assert [(r.address, r.state) for r in entry.recipients] == [
        ("b@x.org", "delivered"),
        ("c@y.org", "pending"),
    ]


def test_queue_drop_keeps_a_due_report_for_housekeeping(tmp_path: Path) -> None:
    # Both copies collected, one recipient asked NOTIFY=SUCCESS: the "relayed" report is
    # owed. The drop has no bounce sink, so the entry must stay (notify_pending) until a
    # pass with a sink sends it, instead of leaving the queue with the report unsent.
    from nosend_store.maildir import MaildirMailbox
    from nosend_store.queue import MaildirBounceSink, Recipient
    from nosend_store.queue_drop import QueueDrop

    queue = OutboundQueue(tmp_path / "q", hostname="yacht")
    envelope = Envelope(
        "a@yacht", (Recipient("b@x.org", notify=("SUCCESS",)), Recipient("c@y.org"))
    )
    qid = queue.enqueue(envelope, MSG)
    with QueueDrop(queue).pop3_session() as session:
        session.mark_deleted(1)
        session.mark_deleted(2)
        assert session.commit() == 2
    entry = queue.get(qid)
    assert entry is not None and entry.notify_pending and not entry.pending
    # Nothing left to collect...
    with QueueDrop(queue).pop3_session() as session:
        assert session.visible() == []
    # ...and the next housekeeping pass delivers the report, then removes the entry.
    box = tmp_path / "a"
    sink = MaildirBounceSink(lambda addr: box if addr == "a@yacht" else None)
    OutboundQueue(tmp_path / "q", hostname="yacht", bounce_sink=sink).maintain()
    assert queue.get(qid) is None
    [report] = MaildirMailbox(box).list_messages()
    with MaildirMailbox(box).open_message(report.key) as f:
        text = f.read()
    assert b"Action: relayed" in text and b"b@x.org" in text


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_queue_drop_session_holds_a_bounded_number_of_claims(tmp_path: Path) -> None:
    # Each listed entry holds a claim (an open lock file) for the whole POP3 session; a
    # large queue used to open one descriptor per entry, up to EMFILE, after which the
    # drop could never be opened and the queue never collected.
    from nosend_store.queue_drop import QueueDrop

    queue = OutboundQueue(tmp_path / "q", hostname="yacht")
    ids = [queue.enqueue(Envelope.simple("a@yacht", [f"r{i}@x.org"]), MSG) for i in range(12)]
    before = _open_fds()
    with QueueDrop(queue, max_entries=5).pop3_session() as session:
        assert _open_fds() - before <= 5 + 1  # the claims and the drop lock
        assert [session.recipients(m.number) for m in session.visible()] == [
            (f"r{i}@x.org",) for i in range(5)
        ]
        for m in session.visible():
            session.mark_deleted(m.number)
        session.commit()
    assert _open_fds() == before
    assert queue.ids() == ids[5:]
    with QueueDrop(queue, max_entries=5).pop3_session() as session:
        assert session.recipients(1) == ("r5@x.org",)


def test_one_unreadable_entry_does_not_stop_the_queue(tmp_path: Path) -> None:
    # envelope.json is replaced atomically, but a disk error or a hand edit can still
    # spoil one. It used to make entries() raise, which stopped housekeeping (expiry,
    # reports) and the queue drop for every other message, and claim() kept the lock.
    from nosend_store.locks import FileLock
    from nosend_store.queue_drop import QueueDrop

    queue = OutboundQueue(tmp_path / "q", hostname="yacht")
    bad = queue.enqueue(Envelope.simple("a@yacht", ["b@x.org"]), MSG)
    good = queue.enqueue(Envelope.simple("a@yacht", ["c@x.org"]), MSG)
    envelope = tmp_path / "q" / "active" / bad / "envelope.json"
    envelope.write_bytes(b'{"id": "truncated')
    assert [e.id for e in queue.entries()] == [good]
    assert queue.maintain() == []
    assert queue.claim(bad) is None
    lock = FileLock(tmp_path / "q" / "active" / bad / "lock")
    assert lock.acquire()  # the failed claim did not keep it
    lock.release()
    with QueueDrop(queue).pop3_session() as session:
        assert [session.recipients(m.number) for m in session.visible()] == [("c@x.org",)]
    assert bad in queue.ids()  # kept on disk for the administrator, never deleted
