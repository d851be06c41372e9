"""Audit findings in the Maildir store, kept as regression tests: what a failure after
the rename into new/ leaves visible, and the cost of a POP3 QUIT deleting many messages."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import nosend_store.maildir as maildir_module
from nosend_store.maildir import MaildirMailbox


def test_commit_failing_after_the_rename_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = MaildirMailbox(tmp_path / "box")
    real = maildir_module.fsync_dir

    def failing(path: str | os.PathLike[str]) -> None:
        if os.fspath(path).endswith("new"):
            raise OSError(errno.EIO, "I/O error")
        real(path)

    monkeypatch.setattr(maildir_module, "fsync_dir", failing)
    writer = box.open_writer()
    writer.write(b"Subject: x\r\n\r\nbody\r\n")
    with pytest.raises(OSError):
        writer.commit()
    monkeypatch.setattr(maildir_module, "fsync_dir", real)
    assert box.list_messages() == []
    assert os.listdir(tmp_path / "box" / "tmp") == []


def test_pop3_deletion_of_flagged_messages_does_not_rescan_cur_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = MaildirMailbox(tmp_path / "box")
    keys = [box.deliver([b"Subject: x\r\n\r\nbody\r\n"]) for _ in range(40)]
    for key in keys:
        box.set_flags(key, "S")
    session = box.pop3_session()
    for msg in session.messages:
        session.mark_deleted(msg.number)
    scans = 0
    real = os.scandir

    def counting(path):  # type: ignore[no-untyped-def]
        nonlocal scans
        scans += 1
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    assert session.commit() == 40
    monkeypatch.setattr(os, "scandir", real)
    assert box.list_messages() == []
    assert scans <= 4  # the listing knows every file name: no search per message
