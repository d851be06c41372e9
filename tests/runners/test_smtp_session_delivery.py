"""MessageSink: the stored message does not depend on how the body was cut into chunks;
submission fields are added exactly when missing; memory held back is bounded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nosend_runners.mail.delivery import MAX_HEADER_BLOCK, HeaderTooLarge, MessageSink
from nosend_store.config import Config
from nosend_store.queue import Envelope
from tests.runners.session_support import make_config, messages, queued

TRACE = b"Received: from c ([192.0.2.1])\r\n\tby mx.test with ESMTP id x1; now\r\n"
DATE = b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
MID = b"Message-ID: <added@mx.test>\r\n"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def store(config: Config, chunks: list[bytes], *, submission: bool, mailboxes=("alice",)) -> bytes:
    sink = MessageSink(
        config,
        mailboxes=mailboxes,
        envelope=None,
        trace=TRACE,
        date=DATE if submission else None,
        message_id=MID if submission else None,
    )
    sink.open()
    for chunk in chunks:
        sink.write(chunk)
    delivered = sink.commit()
    box = config.maildir_path(mailboxes[0])
    key = delivered.keys[mailboxes[0]]
    return (box / "new" / key).read_bytes()


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


header_line = st.sampled_from(
    [
        b"Subject: hello\r\n",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
        b"message-id: <x@y>\r\n",
        b"X-Long: " + b"a" * 300 + b"\r\n",
        b" folded continuation\r\n",
        b"From: someone@example.net\r\n",
    ]
)
body_line = st.sampled_from(
    [b"text\r\n", b"\r\n", b"Date: not a header here\r\n", b"x" * 90 + b"\r\n"]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    headers=st.lists(header_line, max_size=8),
    separator=st.booleans(),
    body=st.lists(body_line, max_size=10),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    submission=st.booleans(),
)
def test_chunking_does_not_change_the_stored_message(
    headers: list[bytes],
    separator: bool,
    body: list[bytes],
    points: list[int],
    submission: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        message = b"".join(headers) + (b"\r\n" if separator else b"") + b"".join(body)
        whole = store(config, [message], submission=submission)
        pieces = store(config, cuts(message, points), submission=submission)
        assert whole == pieces
        assert whole.startswith(TRACE.replace(b"\r\n", b"\n"))
        added_date = DATE.replace(b"\r\n", b"\n") in whole
        added_mid = MID.replace(b"\r\n", b"\n") in whole
        if not submission:
            assert not added_date and not added_mid
        elif separator:
            # With a blank line after the fields, the header block is exactly `headers`.
            assert added_date == (not any(h.lower().startswith(b"date:") for h in headers))
            assert added_mid == (not any(h.lower().startswith(b"message-id:") for h in headers))
            if added_date or added_mid:
                assert whole.index(b"\n\n") > len(TRACE)  # ours stay in the header


def test_fields_added_only_when_missing(config: Config) -> None:
    got = store(config, [b"Subject: s\r\n\r\nbody\r\n"], submission=True)
    assert got == (TRACE + DATE + MID + b"Subject: s\r\n\r\nbody\r\n").replace(b"\r\n", b"\n")
    got = store(config, [b"DATE: d\r\nMessage-Id: <m@x>\r\n\r\nb\r\n"], submission=True)
    assert got == (TRACE + b"DATE: d\r\nMessage-Id: <m@x>\r\n\r\nb\r\n").replace(b"\r\n", b"\n")


def test_a_date_line_in_the_body_does_not_count(config: Config) -> None:
    got = store(config, [b"Subject: s\r\n\r\nDate: in body\r\n"], submission=True)
    assert got.count(b"Date: ") == 2 and DATE.replace(b"\r\n", b"\n") in got


def test_message_id_is_reported(config: Config) -> None:
    sink = MessageSink(config, mailboxes=["bob"], envelope=None, trace=TRACE)
    sink.open()
    sink.write(b"Message-ID:   <abc@def>  \r\n\r\n")
    assert sink.commit().message_id == "<abc@def>"


def test_oversized_header_block(config: Config) -> None:
    line = b"X-Filler: " + b"f" * 990 + b"\r\n"
    count = MAX_HEADER_BLOCK // len(line) + 2
    # Relay/delivery: passed through unscanned; stored whole.
    got = store(config, [line] * count + [b"\r\nbody\r\n"], submission=False)
    assert got.count(b"X-Filler") == count and got.endswith(b"\n\nbody\n")
    # Submission: refused, nothing left behind.
    sink = MessageSink(
        config, mailboxes=["bob"], envelope=None, trace=TRACE, date=DATE, message_id=MID
    )
    sink.open()
    with pytest.raises(HeaderTooLarge):
        for _ in range(count):
            sink.write(line)
    sink.abort()
    assert messages(config, "bob") == []
    assert os.listdir(config.maildir_path("bob") / "tmp") == []


def test_mailboxes_deduplicated_and_queue_written(config: Config) -> None:
    sink = MessageSink(
        config,
        mailboxes=["alice", "bob", "alice"],
        envelope=Envelope.simple("s@x.example", ["r@remote.example"]),
        trace=TRACE,
    )
    sink.open()
    sink.write(b"Subject: s\r\n\r\nb\r\n")
    delivered = sink.commit()
    assert sorted(delivered.keys) == ["alice", "bob"] and delivered.queue_id
    assert len(messages(config, "alice")) == 1 and len(messages(config, "bob")) == 1
    [(entry, content)] = queued(config)
    assert entry.id == delivered.queue_id and content == messages(config, "alice")[0]


def test_abort_leaves_nothing(config: Config) -> None:
    sink = MessageSink(
        config,
        mailboxes=["alice"],
        envelope=Envelope.simple("s@x.example", ["r@remote.example"]),
        trace=TRACE,
    )
    sink.open()
    sink.write(b"Subject: s\r\n\r\npartial")
    sink.abort()
    sink.abort()  # idempotent
    assert messages(config, "alice") == [] and queued(config) == []
    assert os.listdir(config.maildir_path("alice") / "tmp") == []
    assert os.listdir(config.server.queue_dir / "tmp") == []


def test_memory_stays_bounded_for_a_big_message(config: Config) -> None:
    import tracemalloc

    sink = MessageSink(
        config,
        mailboxes=["alice", "bob"],
        envelope=Envelope.simple("s@x.example", ["r@remote.example"]),
        trace=TRACE,
        date=DATE,
        message_id=MID,
    )
    sink.open()
    chunk = (b"y" * 78 + b"\r\n") * 800  # 64000 octets
    tracemalloc.start()
    try:
        sink.write(b"Subject: big\r\n\r\n")
        for _ in range(160):  # about 10 MB
            sink.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    delivered = sink.commit()
    assert delivered.size == 16 + 160 * len(chunk)
    # Three writers with their 256 KiB buffers and one chunk in flight, not 10 MB.
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize("sender", ["s@x.example", ""])
def test_return_path_only_in_local_copies(config: Config, sender: str) -> None:
    sink = MessageSink(
        config,
        mailboxes=["alice"],
        envelope=Envelope.simple(sender, ["r@remote.example"]),
        trace=TRACE,
        return_path=sender,
    )
    sink.open()
    sink.write(b"Subject: s\r\n\r\nb\r\n")
    sink.commit()
    [(_, queued_copy)] = queued(config)
    [local] = messages(config, "alice")
    assert local == f"Return-Path: <{sender}>\n".encode() + queued_copy
    assert queued_copy.startswith(b"Received: ")


def test_deliver_notification_local_remote_and_unknown(config: Config) -> None:
    from nosend_runners.mail.delivery import deliver_notification

    local = deliver_notification(config, "Bob@Example.Test", [b"Subject: report\n\nr\n"])
    assert list(local.keys) == ["bob"] and local.queue_id is None
    assert messages(config, "bob") == [b"Return-Path: <>\nSubject: report\n\nr\n"]
    remote = deliver_notification(config, "x@remote.example", [b"Subject: report\n\nr\n"])
    [(entry, content)] = queued(config)
    assert entry.id == remote.queue_id and entry.sender == ""
    assert entry.recipients[0].notify == ("NEVER",)
    assert content == b"Subject: report\n\nr\n"
    with pytest.raises(LookupError):
        deliver_notification(config, "nobody@example.test", [b"x\n"])
