"""I/O errors (EIO from fsync), a read-only filesystem (EROFS) and a mailbox folder
removed or made unreadable (EACCES) under the store: nothing unacknowledged becomes
visible, nothing stored is lost, reading goes on where it can, and the store works again
once the fault is gone."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from nosend_store.faults import describe
from nosend_store.locks import FileLock
from nosend_store.maildir import MaildirMailbox
from nosend_store.queue import Envelope, OutboundQueue, RecipientResult
from tests.faults_support import inject, remount, small_tmpfs

MESSAGE = b"Subject: io\r\n\r\nbody\r\n"


def envelope() -> Envelope:
    return Envelope.simple("s@example.test", ["r@remote.test"])


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS])
def test_fsync_failure_never_leaves_a_delivery_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # After a failed fsync the kernel may have dropped the dirty pages: the file's
    # content is unknown, so it is never published, and never acknowledged.
    box = MaildirMailbox(tmp_path / "anna")
    kept = box.deliver_bytes(MESSAGE)
    for nth in (1, 2):  # the file's fsync, then new/'s
        with inject(monkeypatch, ("fsync",), code, tmp_path, from_call=nth):
            with pytest.raises(OSError) as info:
                box.deliver_bytes(MESSAGE)
        assert describe(info.value)["error"] == errno.errorcode[code]
        assert [m.key for m in box.list_messages()] == [kept]
        assert listing(tmp_path / "anna" / "tmp") == []


@pytest.mark.parametrize("code", [errno.EIO, errno.EROFS])
def test_fsync_failure_in_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    queue = OutboundQueue(tmp_path / "queue")
    qid = queue.enqueue(envelope(), [MESSAGE])
    with inject(monkeypatch, ("fsync",), code, tmp_path), pytest.raises(OSError):
        queue.enqueue(envelope(), [MESSAGE])
    assert queue.ids() == [qid] and listing(tmp_path / "queue" / "tmp") == []
    claim = queue.claim(qid)
    assert claim is not None
    claim.record("r@remote.test", RecipientResult.deferred("451 4.4.1 later"))
    with inject(monkeypatch, ("fsync",), code, tmp_path), pytest.raises(OSError):
        claim.finish()
    # The attempt was not recorded durably: the entry keeps its last durable state (it
    # is tried again, never lost), and the claim was released.
    assert queue.ids() == [qid]
    again = queue.claim(qid)
    assert again is not None and again.entry.attempts == 0
    again.record("r@remote.test", RecipientResult.deferred("451 4.4.1 later"))
    assert again.finish().next_attempt is not None
    entry = queue.get(qid)
    assert entry is not None and entry.attempts == 1


def test_read_only_filesystem(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        box = MaildirMailbox(disk / "anna")
        queue = OutboundQueue(disk / "queue")
        key = box.deliver_bytes(MESSAGE)
        qid = queue.enqueue(envelope(), [MESSAGE])
        with box.pop3_session():
            pass  # the lock file exists from now on
        remount(disk, "ro")
        try:
            with pytest.raises(OSError) as info:
                box.deliver_bytes(MESSAGE)
            assert describe(info.value)["error"] == "EROFS"
            assert str(disk) in str(describe(info.value)["path"])
            with pytest.raises(OSError):
                queue.enqueue(envelope(), [MESSAGE])
            # A POP3 session still locks, lists and reads; deletions fail and the
            # message stays; a QUIT with nothing to delete is not failed by the seen
            # flag it could not set.
            with box.pop3_session() as drop:
                with drop.open(1) as f:
                    assert f.read() == MESSAGE.replace(b"\r\n", b"\n")
                drop.mark_deleted(1)
                with pytest.raises(OSError):
                    drop.commit()
            with box.pop3_session() as drop:
                drop.note_retrieved(1)
                assert drop.commit() == 0
            assert [m.key for m in box.list_messages()] == [key]
            assert queue.ids() == [qid]
        finally:
            remount(disk, "rw")
        assert box.deliver_bytes(MESSAGE)  # writable again: no restart needed
        assert len(box.list_messages()) == 2


def test_lock_on_read_only_file_needs_an_existing_lock_file(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        (disk / "old.lock").write_bytes(b"")
        remount(disk, "ro")
        try:
            with FileLock(disk / "old.lock"):
                pass
            with pytest.raises(OSError) as info:
                FileLock(disk / "new.lock").acquire()
            assert info.value.errno == errno.EROFS and info.value.filename
        finally:
            remount(disk, "rw")


def test_mailbox_folder_removed_while_in_use(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "anna")  # a long-lived object, as the server keeps
    box.deliver_bytes(MESSAGE)
    with box.pop3_session() as drop:
        shutil.rmtree(tmp_path / "anna")
        with pytest.raises(Exception) as info:
            drop.open(1)
        assert type(info.value).__name__ == "MessageGone"
        drop.mark_deleted(1)
        assert drop.commit() == 1  # already gone counts as removed
    # The next delivery makes the folder again.
    box.deliver_bytes(MESSAGE)
    assert len(box.list_messages()) == 1
    assert listing(tmp_path / "anna") == ["cur", "new", "tmp"]


def test_unreadable_mailbox_folder_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, whom chmod does not stop: EACCES is injected.
    box = MaildirMailbox(tmp_path / "anna")
    box.deliver_bytes(MESSAGE)
    with inject(monkeypatch, ("listdir",), errno.EACCES, tmp_path / "anna"):
        with pytest.raises(PermissionError) as info:
            box.pop3_session()
    assert str(tmp_path / "anna") in str(info.value.filename)
    with inject(monkeypatch, ("open",), errno.EACCES, tmp_path / "anna" / "tmp"):
        with pytest.raises(PermissionError) as info:
            box.deliver_bytes(MESSAGE)
    assert str(tmp_path / "anna" / "tmp") in str(info.value.filename)
    # Readable again: the lock of the failed session was released.
    with box.pop3_session() as drop:
        assert len(drop.messages) == 1
