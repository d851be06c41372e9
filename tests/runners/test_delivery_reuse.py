"""MessageSink's cheap path: what it keeps per configuration follows a reload, a small
message costs no directory checks or host/pid/random look-ups, the one-regex header scan
stores exactly what the line-by-line rules say, and a caller's reused buffer or an empty
message cannot change what is stored."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nosend_runners.mail.delivery import (
    MAX_HEADER_BLOCK,
    HeaderTooLarge,
    MessageSink,
    deliver_notification,
)
from nosend_store._durable import LineEndingNormaliser
from nosend_store.config import Config
from nosend_store.queue import Envelope
from nosend_store.reload import ConfigHolder
from tests.runners.session_support import config_text, mailbox, make_config, messages, queued

TRACE = b"Received: from c\r\n\tby mx.test; now\r\n"
DATE = b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
MID = b"Message-ID: <added@mx.test>\r\n"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def deliver(config: Config, body: bytes, mailboxes: tuple[str, ...] = ("alice",), **kw: Any):  # type: ignore[no-untyped-def]
    sink = MessageSink(config, mailboxes=mailboxes, envelope=None, trace=TRACE, **kw)
    return sink.finish(body)


def test_a_reload_moves_delivery_to_the_new_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "mail.cfg"
    path.write_text(config_text(tmp_path / "one"))
    path.chmod(0o600)
    holder = ConfigHolder(path)
    first = holder.current
    deliver(first, b"Subject: 1\r\n\r\nx\r\n")
    path.write_text(config_text(tmp_path / "two"))
    assert holder.reload() is None
    second = holder.current
    assert second is not first
    deliver(second, b"Subject: 2\r\n\r\nx\r\n")
    deliver(first, b"Subject: 3\r\n\r\nx\r\n")  # a session still holding the old one
    assert [m.split(b"\n")[2] for m in messages(first, "alice")] == [b"Subject: 1", b"Subject: 3"]
    assert [m.split(b"\n")[2] for m in messages(second, "alice")] == [b"Subject: 2"]


def test_a_removed_maildir_is_made_again(config: Config) -> None:
    deliver(config, b"Subject: 1\r\n\r\nx\r\n")
    shutil.rmtree(config.maildir_path("alice"))
    deliver(config, b"Subject: 2\r\n\r\nx\r\n")
    assert len(messages(config, "alice")) == 1


def test_a_removed_queue_is_made_again(config: Config) -> None:
    envelope = Envelope.simple("s@x.example", ["r@remote.example"])
    for _ in range(2):
        sink = MessageSink(config, mailboxes=(), envelope=envelope, trace=TRACE, hostname="mx")
        sink.finish(b"Subject: s\r\n\r\nb\r\n")
        shutil.rmtree(config.server.queue_dir)
    sink = MessageSink(config, mailboxes=(), envelope=envelope, trace=TRACE, hostname="mx")
    sink.finish(b"Subject: s\r\n\r\nb\r\n")
    assert len(queued(config)) == 1


def test_after_new_or_active_disappears_the_next_message_gets_through(config: Config) -> None:
    envelope = Envelope.simple("s@x.example", ["r@remote.example"])

    def one() -> None:
        sink = MessageSink(config, mailboxes=("alice",), envelope=envelope, trace=TRACE)
        sink.finish(b"Subject: s\r\n\r\nb\r\n")

    one()
    for gone in (config.maildir_path("alice") / "new", config.server.queue_dir / "active"):
        shutil.rmtree(gone)
        with pytest.raises(FileNotFoundError):  # this one is refused (451), nothing kept
            one()
        one()  # the kept objects were dropped: fresh ones made the folder again
    assert len(messages(config, "alice")) == 2
    assert len(queued(config)) == 1  # active/ went away with the first two entries
    assert os.listdir(config.maildir_path("alice") / "tmp") == []
    assert os.listdir(config.server.queue_dir / "tmp") == []


def test_whole_message_path_takes_back_a_copy_when_another_fails(config: Config) -> None:
    bob = config.maildir_path("bob")
    bob.mkdir(parents=True)
    (bob / "tmp").write_text("not a directory")
    sink = MessageSink(config, mailboxes=("alice", "bob"), envelope=None, trace=TRACE)
    with pytest.raises(NotADirectoryError):
        sink.finish(b"Subject: s\r\n\r\nb\r\n")  # alice's copy was durable first
    assert messages(config, "alice") == []
    assert os.listdir(config.maildir_path("alice") / "tmp") == []


def test_whole_message_path_refuses_an_oversized_header_on_submission(config: Config) -> None:
    header = b"X-Filler: " + b"f" * 990 + b"\r\n"
    chunk = header * (MAX_HEADER_BLOCK // len(header) + 2)  # no end of header in sight
    sink = MessageSink(
        config, mailboxes=("alice",), envelope=None, trace=TRACE, date=DATE, message_id=MID
    )
    with pytest.raises(HeaderTooLarge):
        sink.finish(chunk)
    assert messages(config, "alice") == []
    relay = MessageSink(config, mailboxes=("alice",), envelope=None, trace=TRACE)
    assert relay.finish(chunk).size == len(chunk)  # relayed mail: stored unscanned
    assert messages(config, "alice") == [(TRACE + chunk).replace(b"\r\n", b"\n")]


def test_no_directory_checks_or_lookups_per_message(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelope = Envelope.simple("s@x.example", ["r@remote.example"])

    def one() -> None:
        sink = MessageSink(
            config,
            mailboxes=("alice", "bob"),
            envelope=envelope,
            trace=TRACE,
            return_path="s@x.example",
            hostname="mx.example.test",
        )
        sink.finish(b"Subject: s\r\n\r\n" + b"y" * 78 + b"\r\n")

    one()  # the first message of a configuration sets things up
    calls: Counter[str] = Counter()

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in ("stat", "lstat", "getpid", "urandom", "makedirs"):
        monkeypatch.setattr(os, name, counting(name, getattr(os, name)))
    monkeypatch.setattr(socket, "gethostname", counting("gethostname", socket.gethostname))
    for _ in range(20):
        one()
    monkeypatch.undo()
    # os.path.isdir/exists go through os.stat. Random bits come in batches that grow
    # (4, 8, 16... names): two more draws for each of the three namers, not 60.
    assert calls["stat"] == calls["lstat"] == calls["makedirs"] == 0, calls
    assert calls["getpid"] == calls["gethostname"] == 0, calls
    assert calls["urandom"] <= 6, calls
    assert len(messages(config, "alice")) == len(messages(config, "bob")) == 21
    assert len(queued(config)) == 21


def test_kept_objects_in_a_forked_child_name_files_with_its_pid(config: Config) -> None:
    deliver(config, b"Subject: parent\r\n\r\nx\r\n")  # the parent fills the cache
    pid = os.fork()
    if pid == 0:  # the child delivers with the inherited Config and its kept objects
        code = 1
        try:
            deliver(config, b"Subject: child\r\n\r\nx\r\n")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    deliver(config, b"Subject: parent again\r\n\r\nx\r\n")
    pids = [
        int(m.key.split("P", 1)[1].split("Q", 1)[0])
        for m in mailbox(config, "alice").list_messages()
    ]
    assert sorted(pids) == sorted([os.getpid(), pid, os.getpid()])


def test_many_threads_deliver_through_one_config(config: Config) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                deliver(config, b"Subject: %d.%d\r\n\r\nx\r\n" % (n, i), ("alice", "bob"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name in ("alice", "bob"):
        subjects = sorted(m.split(b"\n")[2] for m in messages(config, name))
        assert subjects == sorted(b"Subject: %d.%d" % (n, i) for n in range(8) for i in range(25))


def test_a_reused_caller_buffer_does_not_change_the_message(config: Config) -> None:
    buf = bytearray(b"Subject: s\r\n")
    sink = MessageSink(config, mailboxes=("alice",), envelope=None, trace=TRACE)
    sink.write(buf)  # type: ignore[arg-type]
    buf[:] = b"\r\nbody\r\n"
    sink.write(buf)  # type: ignore[arg-type]
    buf[:] = b"XXXXXXXXXXXXXXXXXXXXXX"
    sink.finish()
    assert messages(config, "alice") == [
        (TRACE + b"Subject: s\r\n\r\nbody\r\n").replace(b"\r\n", b"\n")
    ]


def test_an_empty_notification_still_gets_its_return_path(config: Config) -> None:
    deliver_notification(config, "bob@example.test", [])
    assert messages(config, "bob") == [b"Return-Path: <>\n"]


# -- the header scan against the rules written line by line ------------------------------

FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def expected(message: bytes, submission: bool) -> tuple[bytes, str | None]:
    """What the sink must store (disk form) and report, by RFC 5322 sections 2.1, 2.2,
    2.2.3 and 3.6.8 applied one complete line at a time."""
    has_date = has_mid = False
    message_id = None
    pos, end = 0, None
    while (nl := message.find(b"\n", pos)) >= 0:
        line = message[pos : nl + 1]
        if line in (b"\r\n", b"\n"):
            end = pos  # the empty line
            break
        if line[:1] in (b" ", b"\t"):
            pos = nl + 1  # a folded continuation
            continue
        m = FIELD.match(line)
        if m is None:
            end = pos  # the body's first line
            break
        name = m.group(1).lower()
        if name == b"date":
            has_date = True
        elif name == b"message-id":
            has_mid = True
            message_id = line[m.end() :].strip().decode("utf-8", "replace")[:200] or None
        pos = nl + 1
    if end is None:
        end = len(message)  # the header never ended: all of it is header
    added = b""
    if submission and not has_date:
        added += DATE
    if submission and not has_mid:
        added += MID
    rest = message[end:]
    gap = b"\r\n" if added and rest and not rest.startswith((b"\r\n", b"\n")) else b""
    stored = b"Return-Path: <s@x>\r\n" + TRACE + added + message[:end] + gap + rest
    norm = LineEndingNormaliser()
    return norm.feed(stored) + norm.finish(), message_id


line = st.sampled_from(
    [
        b"Subject: hello\r\n",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
        b"DATE :x\r\n",
        b"date-x: not a date\r\n",
        b"Message-ID:   <a@b>  \r\n",
        b"message-id:\r\n",
        b"Message-Id: <\xff@b>\n",
        b" folded\r\n",
        b"\tfolded\r\n",
        b"no colon here\r\n",
        b": empty name\r\n",
        b"X-Odd\x7f: del\r\n",
        b"\r\n",
        b"\n",
        b"\r\r\n",
        b"X: a\rb\r\n",
        b"body\r\n",
        b"Date: no line end",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(line, max_size=10),
    points=st.lists(st.integers(min_value=0, max_value=400), max_size=4),
    submission=st.booleans(),
)
def test_stored_message_follows_the_line_rules(
    lines: list[bytes], points: list[int], submission: bool
) -> None:
    message = b"".join(lines)
    want, want_id = expected(message, submission)
    cuts = sorted({p % (len(message) + 1) for p in points})
    pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        sink = MessageSink(
            config,
            mailboxes=("alice",),
            envelope=None,
            trace=TRACE,
            date=DATE if submission else None,
            message_id=MID if submission else None,
            return_path="s@x",
        )
        for piece in pieces[:-1]:
            sink.write(piece)
        delivered = sink.finish(pieces[-1])
        assert messages(config, "alice") == [want]
        assert delivered.message_id == want_id
        assert delivered.size == len(message)
