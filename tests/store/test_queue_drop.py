"""The outbound queue as a POP3 mail drop (for fetchmail multidrop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_store.locks import LockBusy
from nosend_store.queue import Envelope, OutboundQueue, Recipient, RecipientResult
from nosend_store.queue_drop import QueueDrop

MSG = [b"From: a@yacht\r\nSubject: s\r\n\r\nbody\r\n"]


@pytest.fixture
def queue(tmp_path: Path) -> OutboundQueue:
    return OutboundQueue(tmp_path / "q", hostname="yacht")


def test_one_copy_per_pending_recipient_with_return_path_and_envelope(
    queue: OutboundQueue,
) -> None:
    q1 = queue.enqueue(Envelope.simple("a@yacht", ["b@x.org", "c@y.org"]), MSG)
    q2 = queue.enqueue(Envelope.simple("", ["d@z.org"]), MSG)
    with QueueDrop(queue).pop3_session() as session:
        listing = session.visible()
        assert [m.uidl for m in listing] == [f"{q1}.0", f"{q1}.1", f"{q2}.0"]
        for m in listing:
            wire = b"".join(session.wire_chunks(m.number))
            assert len(wire) == m.size
        assert b"".join(session.wire_chunks(2)) == (
            b"Return-Path: <a@yacht>\r\nX-Envelope-To: <c@y.org>\r\n" + MSG[0]
        )
        assert b"".join(session.wire_chunks(3)).startswith(
            b"Return-Path: <>\r\nX-Envelope-To: <d@z.org>\r\n"
        )
        assert session.recipients(1) == ("b@x.org",)
        with session.open(1) as f:
            assert f.readline() == b"Return-Path: <a@yacht>\n"


def test_uidls_are_stable_across_sessions(queue: OutboundQueue) -> None:
    queue.enqueue(Envelope.simple("a@yacht", ["b@x.org", "c@y.org"]), MSG)
    with QueueDrop(queue).pop3_session() as s1:
        first = s1.visible()
    with QueueDrop(OutboundQueue(queue.path)).pop3_session() as s2:
        assert s2.visible() == first


def test_deleting_a_copy_delivers_that_recipient_only(queue: OutboundQueue) -> None:
    qid = queue.enqueue(
        Envelope("a@yacht", (Recipient("b@x.org"), Recipient("c@y.org"))),
        MSG,
    )
    with QueueDrop(queue).pop3_session() as session:
        session.mark_deleted(1)
        assert session.commit() == 1
    entry = queue.get(qid)
    assert entry is not None
    assert [(r.address, r.state) for r in entry.recipients] == [
        ("b@x.org", "delivered"),
        ("c@y.org", "pending"),
    ]
    assert entry.attempts == 0  # collecting is not a failed attempt: no backoff
    with QueueDrop(queue).pop3_session() as session:
        assert [m.uidl for m in session.visible()] == [f"{qid}.1"]
        session.mark_deleted(1)
        session.commit()
    assert queue.entries() == []


def test_dropped_connection_delivers_nothing(queue: OutboundQueue) -> None:
    qid = queue.enqueue(Envelope.simple("a@yacht", ["b@x.org"]), MSG)
    session = QueueDrop(queue).pop3_session()
    session.mark_deleted(1)
    session.close()
    entry = queue.get(qid)
    assert entry is not None and entry.pending


def test_session_excludes_transport_and_other_sessions(queue: OutboundQueue) -> None:
    busy = queue.enqueue(Envelope.simple("a@yacht", ["b@x.org"]), MSG)
    free = queue.enqueue(Envelope.simple("a@yacht", ["c@x.org"]), MSG)
    transport = queue.claim(busy)
    assert transport is not None
    drop = QueueDrop(queue)
    with drop.pop3_session() as session:
        assert [m.uidl for m in session.visible()] == [f"{free}.0"]
        assert queue.claim(free) is None  # the drop holds it
        with pytest.raises(LockBusy):
            drop.pop3_session()
    transport.record("b@x.org", RecipientResult.delivered())
    transport.finish()
    claim = queue.claim(free)
    assert claim is not None
    claim.release()


def test_unsplit_drop_lists_all_recipients_in_one_folded_header(queue: OutboundQueue) -> None:
    qid = queue.enqueue(Envelope.simple("a@yacht", ["b@x.org", "c@y.org"]), MSG)
    with QueueDrop(queue, split_recipients=False).pop3_session() as session:
        [msg] = session.visible()
        assert msg.uidl == qid
        wire = b"".join(session.wire_chunks(1))
        assert wire.startswith(
            b"Return-Path: <a@yacht>\r\nX-Envelope-To: <b@x.org>,\r\n <c@y.org>\r\nFrom:"
        )
        assert len(wire) == msg.size
        session.mark_deleted(1)
        session.commit()
    assert queue.entries() == []


def test_header_injection_through_addresses_is_neutralised(queue: OutboundQueue) -> None:
    queue.enqueue(Envelope.simple("a@yacht\r\nBcc: evil@x", ["b@x.org"]), MSG)
    with QueueDrop(queue).pop3_session() as session:
        head = b"".join(session.wire_chunks(1)).split(b"\r\n")[0]
        assert head == b"Return-Path: <a@yachtBcc: evil@x>"
