"""Every storage failure names its file or folder: in the exception, and in the one log
line the session writes for it (a ``data_dir`` problem used to log only
``FileNotFoundError``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.testing.harness import Harness
from nosend_store._durable import StagedFile, fsync_dir, write_new_file
from nosend_store.faults import describe, name_path
from tests.faults_support import inject
from tests.runners.session_support import (
    LOOPBACK,
    PASSWORDS,
    STRANGER,
    captured_log,
    deliver,
    make_config,
)

pytestmark = pytest.mark.anyio

BODY = b"Subject: where\r\n\r\nHello\r\n"


async def test_unusable_data_dir_is_named_in_the_log(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mail").write_text("a file where the mailboxes should be")
    with captured_log() as lines:
        async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
            assert (await h.read_reply()).code == 220
            await h.send(b"HELO c\r\nMAIL FROM:<s@remote.example>\r\n")
            await h.send(b"RCPT TO:<alice@example.test>\r\n")
            assert [r.code for r in await h.read_replies(3)] == [250, 250, 250]
            await h.send(b"DATA\r\n")
            assert (await h.read_reply()).code == 354
            await h.send(BODY + b".\r\n")
            reply = await h.read_reply()
            assert (reply.code, reply.enhanced) == (451, "4.3.0")
    failed = [line for line in lines if "store_failed" in line]
    assert len(failed) == 1
    assert f"path={data}/mail" in failed[0] and "error=" in failed[0]


async def test_unreadable_maildrop_is_named_in_the_log(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    deliver(config, "alice", b"Subject: x\n\ny\n")
    new = config.maildir_path("alice") / "new"
    for name in os.listdir(new):
        os.unlink(new / name)
    new.rmdir()
    new.write_text("not a folder")  # listing it fails with ENOTDIR
    with captured_log() as lines:
        async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
            assert (await h.read_line()).startswith(b"+OK")
            await h.send_line("USER alice")
            await h.read_line()
            await h.send_line(f"PASS {PASSWORDS['alice']}")
            assert (await h.read_line()).startswith(b"-ERR [SYS/TEMP]")
    failed = [line for line in lines if "login_failed" in line]
    assert len(failed) == 1
    assert "error=ENOTDIR" in failed[0] and f"path={new}" in failed[0]


def test_descriptor_calls_get_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.write/os.fsync on a descriptor name no file; the store adds it.
    with inject(monkeypatch, ("write",), errno.EIO, tmp_path), pytest.raises(OSError) as info:
        write_new_file(str(tmp_path / "a"), b"data")
    assert info.value.filename == str(tmp_path / "a")
    staged = StagedFile(str(tmp_path / "b"))
    staged.write(b"data\r\n")
    with inject(monkeypatch, ("fsync",), errno.EIO, tmp_path), pytest.raises(OSError) as info:
        staged.finish()
    assert info.value.filename == str(tmp_path / "b")
    staged.close()
    with inject(monkeypatch, ("fsync",), errno.EIO, tmp_path), pytest.raises(OSError) as info:
        fsync_dir(tmp_path)
    assert describe(info.value) == {"error": "EIO", "path": str(tmp_path)}


def test_describe_and_name_path() -> None:
    named = name_path(OSError(errno.ENOSPC, "No space left on device"), "/var/mail/x")
    assert describe(named) == {"error": "ENOSPC", "path": "/var/mail/x"}
    # An error that already names its file keeps it.
    kept = name_path(FileNotFoundError(errno.ENOENT, "gone", "/a"), "/b")
    assert kept.filename == "/a"
    assert describe(ValueError("x")) == {"error": "ValueError", "path": None}


def test_missing_maildir_names_the_folder(tmp_path: Path) -> None:
    from nosend_store.maildir import MaildirMailbox

    with pytest.raises(FileNotFoundError) as info:
        MaildirMailbox(tmp_path / "nobody", create=False)
    assert describe(info.value) == {"error": "ENOENT", "path": str(tmp_path / "nobody")}
    assert str(tmp_path / "nobody") in str(info.value)


def test_read_error_names_the_message_file(tmp_path: Path) -> None:
    from nosend_store.message_reader import read_some

    class FailingFile:
        name = str(tmp_path / "new" / "1.key")

        def read(self, size: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

        def close(self) -> None:
            pass

    with pytest.raises(OSError) as info:
        read_some(FailingFile(), 100)  # type: ignore[arg-type]
    assert describe(info.value) == {"error": "EIO", "path": FailingFile.name}
