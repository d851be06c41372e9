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
