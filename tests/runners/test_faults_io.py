"""I/O errors, a read-only filesystem and a mailbox folder removed or unreadable under
running sessions: SMTP answers ``451 4.3.0`` and stores nothing half-written, POP3
answers ``-ERR [SYS/TEMP]`` (RFC 3206) where it must and goes on serving what it can,
each failure is one log line naming the file, and both work again once the fault is
gone."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.testing.harness import Harness
from tests.faults_support import inject, remount, small_tmpfs
from tests.runners.session_support import (
    LOOPBACK,
    PASSWORDS,
    STRANGER,
    captured_log,
    deliver,
    make_config,
    messages,
)

pytestmark = pytest.mark.anyio

BODY = b"Subject: io\r\n\r\nHello\r\n"


async def send(h: Harness, rcpt: str = "alice@example.test") -> tuple[int, str | None]:
    await h.send(f"MAIL FROM:<s@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    assert [r.code for r in await h.read_replies(3)] == [250, 250, 354]
    await h.send(BODY + b".\r\n")
    reply = await h.read_reply()
    return reply.code, reply.enhanced


async def smtp(h: Harness) -> None:
    assert (await h.read_reply()).code == 220
    await h.send_line("EHLO client.example")
    assert (await h.read_reply()).code == 250


async def pop3_login(h: Harness) -> bytes:
    assert (await h.read_line()).startswith(b"+OK")
    await h.send_line("USER alice")
    await h.read_line()
    await h.send_line(f"PASS {PASSWORDS['alice']}")
    return await h.read_line()


async def command(h: Harness, line: str) -> bytes:
    await h.send_line(line)
    return await h.read_line()


def lines_with(lines: list[str], event: str) -> list[str]:
    return [line for line in lines if f"event={event}" in line]


async def test_fsync_eio_gives_451_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path)
    with captured_log() as lines:
        async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
            await smtp(h)
            with inject(monkeypatch, ("fsync",), errno.EIO, tmp_path / "data"):
                assert await send(h, "sales@example.test") == (451, "4.3.0")
            assert (await send(h, "sales@example.test"))[0] == 250
    failed = lines_with(lines, "store_failed")
    assert len(failed) == 1 and "error=EIO" in failed[0]
    assert f"path={tmp_path}/data/" in failed[0]
    assert len(messages(config, "alice")) == 1


async def test_read_only_filesystem(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        config = make_config(disk)
        deliver(config, "alice", b"Subject: before\n\nkept\n")
        async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
            assert (await pop3_login(h)).startswith(b"+OK")  # makes the lock file
            assert (await command(h, "QUIT")).startswith(b"+OK")
        remount(disk, "ro")
        try:
            with captured_log() as lines:
                async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
                    await smtp(h)
                    assert await send(h) == (451, "4.3.0")
                async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
                    assert (await pop3_login(h)).startswith(b"+OK")
                    assert (await command(h, "RETR 1")).startswith(b"+OK")
                    assert await h.read_multiline() == [b"Subject: before", b"", b"kept"]
                    assert (await command(h, "DELE 1")).startswith(b"+OK")
                    assert (await command(h, "QUIT")).startswith(b"-ERR [SYS/TEMP]")
            failed = lines_with(lines, "store_failed")
            assert len(failed) == 1 and "error=EROFS" in failed[0] and f"path={disk}" in failed[0]
            update = lines_with(lines, "update_failed")
            assert len(update) == 1 and "error=EROFS" in update[0] and str(disk) in update[0]
            assert messages(config, "alice") == [b"Subject: before\n\nkept\n"]
        finally:
            remount(disk, "rw")
        async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
            await smtp(h)
            assert (await send(h))[0] == 250
        assert len(messages(config, "alice")) == 2


async def test_mailbox_folder_removed_while_the_server_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = config.maildir_path("alice")
    async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
        await smtp(h)
        assert (await send(h))[0] == 250
        shutil.rmtree(folder)  # an administrator's mistake, or a cleanup script
        assert (await send(h))[0] == 250  # the kept Maildir object makes it again
    assert len(messages(config, "alice")) == 1
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await pop3_login(h)).startswith(b"+OK maildrop has 1 message")
        shutil.rmtree(folder)  # gone in the middle of the session
        assert (await command(h, "RETR 1")).startswith(b"-ERR [SYS/TEMP]")
        assert (await command(h, "DELE 1")).startswith(b"+OK")
        assert (await command(h, "QUIT")).startswith(b"+OK")
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await pop3_login(h)).startswith(b"+OK maildrop has 0 messages")


async def test_unreadable_mailbox_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, whom chmod does not stop: EACCES is injected.
    config = make_config(tmp_path)
    deliver(config, "alice", b"Subject: x\n\ny\n")
    folder = config.maildir_path("alice")
    with captured_log() as lines:
        with inject(monkeypatch, ("listdir", "open"), errno.EACCES, folder):
            async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
                assert (await pop3_login(h)).startswith(b"-ERR [SYS/TEMP]")
            async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
                await smtp(h)
                assert await send(h) == (451, "4.3.0")
        async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
            assert (await pop3_login(h)).startswith(b"+OK maildrop has 1 message")
    login = lines_with(lines, "login_failed")
    assert len(login) == 1 and "error=EACCES" in login[0] and f"path={folder}" in login[0]
    store = lines_with(lines, "store_failed")
    assert len(store) == 1 and "error=EACCES" in store[0] and f"path={folder}" in store[0]
