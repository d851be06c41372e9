"""A full disk (ENOSPC) under the store: delivery, enqueue, a queue-state update and a
``mail.cfg`` edit fail cleanly, name the file, leave nothing half-written visible, keep
what was already stored, and work again once there is room.

Each case runs twice: with ``os.write``/``os.fsync`` made to fail (any machine), and on
a real 1 MB tmpfs filled to the last block (root; skipped with a reason elsewhere,
never under CI)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nosend_store.config_edit import edit_config
from nosend_store.faults import describe, is_full
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, RecipientResult
from tests.faults_support import fill, inject, small_tmpfs
from tests.runners.session_support import config_text

MESSAGE = b"Subject: hi\r\n\r\n" + b"a line of the body\r\n" * 50
BIG_STREAM = [b"y" * 1000 + b"\r\n"] * 600  # 600 KB: over what is left of a filled tmpfs


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


def assert_full_error(exc: OSError, under: Path) -> None:
    assert exc.errno == errno.ENOSPC
    assert is_full(exc)
    fields = describe(exc)
    assert fields["error"] == "ENOSPC"
    assert fields["path"] is not None and fields["path"].startswith(str(under))
    assert str(under) in str(exc)  # the message names the file, too


# -- Maildir delivery ------------------------------------------------------------------


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_delivery_of_a_small_message_fails_whole_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    box = MaildirMailbox(tmp_path / "anna")
    kept = box.deliver_bytes(MESSAGE)
    with inject(monkeypatch, (call,), errno.ENOSPC, tmp_path), pytest.raises(OSError) as info:
        box.deliver_bytes(MESSAGE)
    assert_full_error(info.value, tmp_path / "anna" / "tmp")
    assert listing(tmp_path / "anna" / "tmp") == []
    assert [m.key for m in box.list_messages()] == [kept]
    box.deliver_bytes(MESSAGE)  # room again: works at once, nothing to reset
    assert len(box.list_messages()) == 2


@pytest.mark.parametrize("call", ["write", "writev", "fsync"])
def test_streamed_delivery_fails_whole_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    box = MaildirMailbox(tmp_path / "anna")
    with inject(monkeypatch, (call,), errno.ENOSPC, tmp_path), pytest.raises(OSError) as info:
        with box.open_writer() as writer:
            for chunk in [b"z" * 100_000 + b"\r\n", b"short\r\n"] * 3:
                writer.write(chunk)
            writer.commit()
    assert_full_error(info.value, tmp_path / "anna" / "tmp")
    assert listing(tmp_path / "anna" / "tmp") == []
    assert box.list_messages() == []


def test_new_dir_fsync_failure_takes_the_message_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = MaildirMailbox(tmp_path / "anna")
    # The file's own fsync is the 1st fsync under the folder; new/'s is the 2nd.
    with inject(monkeypatch, ("fsync",), errno.ENOSPC, tmp_path, from_call=2):
        with pytest.raises(OSError) as info:
            box.deliver_bytes(MESSAGE)
    assert_full_error(info.value, tmp_path / "anna" / "new")
    assert box.list_messages() == [] and listing(tmp_path / "anna" / "tmp") == []


# -- the outbound queue ----------------------------------------------------------------


def envelope() -> Envelope:
    return Envelope.simple("s@example.test", ["r@remote.test"])


@pytest.mark.parametrize(("call", "nth"), [("write", 1), ("write", 2), ("fsync", 1), ("fsync", 3)])
def test_enqueue_fails_whole_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, nth: int
) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    kept = queue.enqueue(envelope(), [MESSAGE])
    with inject(monkeypatch, (call,), errno.ENOSPC, tmp_path, from_call=nth):
        with pytest.raises(OSError) as info:
            queue.enqueue(envelope(), [MESSAGE])
    assert_full_error(info.value, tmp_path / "queue")
    assert queue.ids() == [kept]
    assert listing(tmp_path / "queue" / "tmp") == []
    assert len(set(queue.ids()) | {queue.enqueue(envelope(), [MESSAGE])}) == 2


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_queue_state_update_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    queue = OutboundQueue(tmp_path / "queue", clock=lambda: 1000.0)
    qid = queue.enqueue(envelope(), [MESSAGE])
    before = (tmp_path / "queue" / "active" / qid / "envelope.json").read_bytes()
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("r@remote.test", RecipientResult.deferred("451 4.4.1 try later"))
    with inject(monkeypatch, (call,), errno.ENOSPC, tmp_path), pytest.raises(OSError) as info:
        claim.finish()
    assert_full_error(info.value, tmp_path / "queue" / "active" / qid)
    # The message is still queued, with its last durable state, and nothing else
    # (no envelope.json.tmp.* beside it); the claim was released.
    entry_dir = tmp_path / "queue" / "active" / qid
    assert listing(entry_dir) == ["envelope.json", "lock", "message"]
    assert (entry_dir / "envelope.json").read_bytes() == before
    again = queue.claim(qid)
    assert again is not None and again.entry.attempts == 0
    again.record("r@remote.test", RecipientResult.deferred("451 4.4.1 try later"))
    again.finish()  # room again: the update goes through
    entry = queue.get(qid)
    assert entry is not None and entry.attempts == 1


# -- mail.cfg edits --------------------------------------------------------------------


def test_config_edit_leaves_mail_cfg_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new text goes through a file object's own write(2), out of monkeypatch's
    # reach: the fsync is injected here, the write fails for real on the full tmpfs
    # (test_real_full_disk_command_line_edit_names_mail_cfg).
    cfg = tmp_path / "etc" / "mail.cfg"
    cfg.parent.mkdir()
    cfg.write_text(config_text(tmp_path / "data"))
    before = cfg.read_bytes()
    with inject(monkeypatch, ("fsync",), errno.ENOSPC, cfg.parent):
        with pytest.raises(OSError) as info:
            edit_config(cfg, lambda doc: doc.add_domain("new.example"))
    assert info.value.errno == errno.ENOSPC
    assert describe(info.value)["path"] is not None
    assert str(cfg.parent) in describe(info.value)["path"]  # type: ignore[operator]
    assert cfg.read_bytes() == before
    assert listing(cfg.parent) == ["mail.cfg"]  # no temporary file left behind
    edit_config(cfg, lambda doc: doc.add_domain("new.example"))
    assert b"new.example" in cfg.read_bytes()


# -- the same on a real, full filesystem -----------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> object:
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk


def test_real_full_disk_delivery_enqueue_and_reading(full_disk: Path) -> None:
    disk = full_disk
    box = MaildirMailbox(disk / "mail" / "anna")
    queue = OutboundQueue(disk / "queue")
    kept = box.deliver_bytes(MESSAGE)
    queued = queue.enqueue(envelope(), [MESSAGE])
    filler = fill(disk)

    with pytest.raises(OSError) as info:
        box.deliver(BIG_STREAM)
    assert_full_error(info.value, disk / "mail" / "anna")
    with pytest.raises(OSError) as info:
        queue.enqueue(envelope(), BIG_STREAM)
    assert_full_error(info.value, disk / "queue")
    assert listing(disk / "mail" / "anna" / "tmp") == []
    assert listing(disk / "queue" / "tmp") == []

    # What was stored before stays readable, and POP3 can delete on a full disk.
    with box.pop3_session() as drop:
        with drop.open(1) as f:
            assert f.read() == MESSAGE.replace(b"\r\n", b"\n")
        drop.mark_deleted(1)
        assert drop.commit() == 1
    assert box.list_messages() == [] and kept
    assert queue.ids() == [queued]

    filler.unlink()  # space is back: no restart, no reset
    box.deliver(BIG_STREAM)
    queue.enqueue(envelope(), [MESSAGE])
    assert len(box.list_messages()) == 1 and len(queue.ids()) == 2


def test_real_full_disk_command_line_edit_names_mail_cfg(full_disk: Path) -> None:
    cfg = full_disk / "mail.cfg"
    cfg.write_text(config_text(full_disk / "data"))
    cfg.chmod(0o600)
    before = cfg.read_bytes()
    filler = fill(full_disk)
    # A long alias list: the new file needs more than the block the old one frees.
    targets = [f"someone{i}@far.away.example" for i in range(300)]
    command = [sys.executable, "-m", "nosend", "alias", "add", "--config", str(cfg)]
    done = subprocess.run(
        [*command, "big@example.test", *targets], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback
    assert str(cfg) in done.stderr and "No space left on device" in done.stderr
    assert cfg.read_bytes() == before
    assert listing(full_disk) == ["filler", "mail.cfg"]
    filler.unlink()
    done = subprocess.run(
        [*command, "big@example.test", *targets], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert b"someone299@far.away.example" in cfg.read_bytes()


def test_the_original_error_survives_a_failing_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a sick disk the cleanup's unlink may fail too: the caller must still see the
    # error that decides the reply (ENOSPC: 452), not the unlink's.
    box = MaildirMailbox(tmp_path / "anna")
    with inject(monkeypatch, ("unlink",), errno.EIO, tmp_path):
        for call in ("write", "fsync"):
            with inject(monkeypatch, (call,), errno.ENOSPC, tmp_path):
                with pytest.raises(OSError) as info:
                    box.deliver_bytes(MESSAGE)
            assert info.value.errno == errno.ENOSPC
        with inject(monkeypatch, ("fsync",), errno.ENOSPC, tmp_path):
            with pytest.raises(OSError) as info:
                with box.open_writer() as writer:
                    writer.write(MESSAGE)
                    writer.commit()
        assert info.value.errno == errno.ENOSPC
    assert box.list_messages() == []
