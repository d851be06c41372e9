"""Crash safety of delivery: a child process SIGKILLs itself at each step of a delivery
and readers must then see the whole message or nothing, and never an acknowledgement
for a message that is not durably in place (DESIGN invariant 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nosend_store.maildir import MaildirMailbox

BODY_LINES = 3000
LINE = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
DISK_BODY = b"Subject: crash test\n\n" + LINE.replace(b"\r\n", b"\n") * BODY_LINES + b"END\n"

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from nosend_store.maildir import MaildirMailbox

    path, kill_at = sys.argv[1], sys.argv[2]
    LINE = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\\r\\n"

    def die(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def chunks():
        yield b"Subject: crash test\\r\\n\\r\\n"
        for i in range(__LINES__):
            if i == __LINES__ // 2:
                die("mid_write")
            yield LINE
        yield b"END\\r\\n"

    key = MaildirMailbox(path).deliver(chunks(), crash_hook=die)
    print("ACK", key, flush=True)
    """
).replace("__LINES__", str(BODY_LINES))


def run_child(path: Path, kill_at: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(path), kill_at],
        capture_output=True,
        timeout=20,
    )


def visible_messages(path: Path) -> list[bytes]:
    mb = MaildirMailbox(path)
    out = []
    for m in mb.list_messages():
        with mb.open_message(m.key) as f:
            data = f.read()
        # The listed size must describe exactly what a reader gets.
        assert m.size == len(data) + data.count(b"\n")
        out.append(data)
    return out


@pytest.mark.parametrize(
    ("kill_at", "visible_after"),
    [
        ("mid_write", False),
        ("before_fsync", False),
        ("before_rename", False),
        # The rename is done but new/ is not fsynced yet: after a process crash (not a
        # power cut) the entry exists and must be complete; no ACK was given either way.
        ("before_dir_fsync", True),
    ],
)
def test_kill_during_delivery_shows_all_or_nothing(
    tmp_path: Path, kill_at: str, visible_after: bool
) -> None:
    box = tmp_path / "box"
    MaildirMailbox(box)
    result = run_child(box, kill_at)
    assert result.returncode == -9, result.stderr
    assert b"ACK" not in result.stdout  # never acknowledged before durable
    messages = visible_messages(box)
    if visible_after:
        assert messages == [DISK_BODY]
    else:
        assert messages == []
    # The next delivery and a cleanup after the crash work normally.
    MaildirMailbox(box).deliver([b"after\n"])
    assert visible_messages(box)[-1] == b"after\n"


def test_uninterrupted_child_acknowledges_a_complete_message(tmp_path: Path) -> None:
    box = tmp_path / "box"
    result = run_child(box, "never")
    assert result.returncode == 0, result.stderr
    key = result.stdout.split()[1].decode()
    assert [m.key for m in MaildirMailbox(box).list_messages()] == [key]
    assert visible_messages(box) == [DISK_BODY]


def test_reader_racing_many_deliveries_never_sees_a_partial_message(tmp_path: Path) -> None:
    box = tmp_path / "box"
    MaildirMailbox(box)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from nosend_store.maildir import MaildirMailbox\n"
            "mb = MaildirMailbox(sys.argv[1])\n"
            "for i in range(60):\n"
            "    mb.deliver([b'Subject: %d\\r\\n\\r\\n' % i] + [b'x' * 70 + b'\\r\\n'] * 300"
            " + [b'END\\r\\n'])\n",
            str(box),
        ]
    )
    try:
        seen = 0
        while writer.poll() is None or seen == 0:
            for data in visible_messages(box):
                header, _, body = data.partition(b"\n\n")
                assert header.startswith(b"Subject: ")
                assert body == (b"x" * 70 + b"\n") * 300 + b"END\n"
                seen += 1
            if writer.poll() is not None:
                break
    finally:
        writer.wait(20)
    assert writer.returncode == 0
    assert len(visible_messages(box)) == 60


QUEUE_CHILD = """
import os, signal, sys
from nosend_store.queue import Envelope, OutboundQueue

path, kill_at = sys.argv[1], sys.argv[2]

def die(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

q = OutboundQueue(path)
with q.open_writer(Envelope.simple("a@y", ["b@x", "c@x"])) as w:
    w.write(b"Subject: q\\r\\n\\r\\n")
    for i in range(2000):
        if i == 1000:
            die("mid_write")
        w.write(b"y" * 70 + b"\\r\\n")
    qid = w.commit(crash_hook=die)
print("ACK", qid, flush=True)
"""


@pytest.mark.parametrize(
    ("kill_at", "visible_after"),
    [("mid_write", False), ("before_rename", False), ("before_dir_fsync", True), ("never", True)],
)
def test_kill_during_enqueue_shows_all_or_nothing(
    tmp_path: Path, kill_at: str, visible_after: bool
) -> None:
    from nosend_store.queue import OutboundQueue

    path = tmp_path / "queue"
    result = subprocess.run(
        [sys.executable, "-c", QUEUE_CHILD, str(path), kill_at], capture_output=True, timeout=20
    )
    if kill_at == "never":
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"ACK ")
    else:
        assert result.returncode == -9, result.stderr
        assert b"ACK" not in result.stdout
    q = OutboundQueue(path)
    entries = q.entries()
    assert len(entries) == (1 if visible_after else 0)
    for entry in entries:
        assert [r.address for r in entry.pending] == ["b@x", "c@x"]
        claim = q.claim(entry.id)
        assert claim is not None
        with claim:
            wire = b"".join(claim.wire_chunks())
        assert wire == b"Subject: q\r\n\r\n" + (b"y" * 70 + b"\r\n") * 2000
        assert len(wire) == entry.wire_size
    # Staging leftovers are invisible and cleaned up later.
    q.clean_tmp(max_age=-1)
    assert os.listdir(path / "tmp") == []


def test_killed_transport_loses_its_claim_and_nothing_else(tmp_path: Path) -> None:
    from nosend_store.queue import Envelope, OutboundQueue

    q = OutboundQueue(tmp_path / "queue")
    qid = q.enqueue(Envelope.simple("a@y", ["b@x"]), [b"x\r\n"])
    code = (
        "import sys, time\n"
        "from nosend_store.queue import OutboundQueue, RecipientResult\n"
        "c = OutboundQueue(sys.argv[1]).claim(sys.argv[2])\n"
        "c.record('b@x', RecipientResult.delivered())\n"
        "print('claimed', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "queue"), qid], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"claimed\n"
        assert q.claim(qid) is None
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    claim = q.claim(qid, timeout=5)
    assert claim is not None  # the claim died with the process
    assert [r.address for r in claim.entry.pending] == ["b@x"]  # unsaved result not applied
    claim.release()


def test_kill_after_report_before_removal_repeats_the_report_never_loses_it(
    tmp_path: Path,
) -> None:
    from nosend_store.queue import Envelope, OutboundQueue

    q = OutboundQueue(tmp_path / "queue")
    qid = q.enqueue(Envelope.simple("a@y", ["b@x"]), [b"Subject: s\r\n\r\nx\r\n"])
    code = (
        "import os, signal, sys\n"
        "from nosend_store.maildir import MaildirMailbox\n"
        "from nosend_store.queue import OutboundQueue, RecipientResult\n"
        "box = MaildirMailbox(sys.argv[3])\n"
        "def sink(rcpt, chunks):\n"
        "    box.deliver(chunks)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "c = OutboundQueue(sys.argv[1], bounce_sink=sink).claim(sys.argv[2])\n"
        "c.record('b@x', RecipientResult.failed('550 no'))\n"
        "c.finish()\n"
    )
    box_path = tmp_path / "sender-box"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "queue"), qid, str(box_path)],
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == -9, result.stderr
    box = MaildirMailbox(box_path)
    assert len(box.list_messages()) == 1
    entry = q.get(qid)
    assert entry is not None and entry.notify_pending and entry.pending == ()
    again = OutboundQueue(tmp_path / "queue", bounce_sink=lambda r, ch: box.deliver(ch))
    [outcome] = again.maintain()
    assert outcome.removed
    assert len(box.list_messages()) == 2  # at least once: a duplicate, nothing lost
    assert again.entries() == []
