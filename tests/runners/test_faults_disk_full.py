"""A full disk (ENOSPC) under running sessions: SMTP answers ``452 4.3.1`` (RFC 3463
"mail system full"), stores nothing half-written, logs one line naming the file, and
accepts again once there is room; POP3 keeps serving retrieval and QUIT deletions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.mail.backend import run_smtp as smtp_session
from nosend_runners.testing.harness import Harness
from nosend_store.config import Config, load_config
from tests.faults_support import fill, inject, small_tmpfs
from tests.runners.session_support import (
    LOOPBACK,
    PASSWORDS,
    STRANGER,
    captured_log,
    config_text,
    deliver,
    messages,
    queued,
)

pytestmark = pytest.mark.anyio

BODY = b"Subject: full\r\n\r\nHello\r\n"
LARGE = b"Subject: large\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600  # over one write batch


def big_config(base: Path) -> Config:
    """The sessions' test configuration, with room for LARGE."""
    path = base / "mail.cfg"
    text = config_text(base / "data").replace("max_message_size = 100K", "max_message_size = 2M")
    path.write_text(text)
    path.chmod(0o600)
    return load_config(path)


async def ehlo(h: Harness) -> None:
    assert (await h.read_reply()).code == 220
    await h.send_line("EHLO client.example")
    assert (await h.read_reply()).code == 250


async def send(h: Harness, rcpt: str, body: bytes) -> tuple[int, str | None]:
    await h.send(f"MAIL FROM:<s@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    assert [r.code for r in await h.read_replies(3)] == [250, 250, 354]
    await h.send(body + b".\r\n")
    reply = await h.read_reply()
    return reply.code, reply.enhanced


def nothing_half_written(config: Config) -> None:
    for name in config.mailboxes:
        tmp = config.maildir_path(name) / "tmp"
        assert not tmp.is_dir() or os.listdir(tmp) == []
    qtmp = config.server.queue_dir / "tmp"
    assert not qtmp.is_dir() or os.listdir(qtmp) == []


def store_failures(lines: list[str]) -> list[str]:
    return [line for line in lines if "store_failed" in line]


@pytest.mark.parametrize(("call", "body"), [("write", BODY), ("fsync", BODY), ("writev", LARGE)])
async def test_injected_full_disk_gives_452_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, body: bytes
) -> None:
    config = big_config(tmp_path)
    data = tmp_path / "data"
    with captured_log() as lines:
        async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
            await ehlo(h)
            assert (await send(h, "sales@example.test", BODY))[0] == 250
            with inject(monkeypatch, (call,), errno.ENOSPC, data) as fault:
                assert await send(h, "sales@example.test", body) == (452, "4.3.1")
                assert fault.hits >= 1
            # Room again: the same session (and the client's retry) succeeds.
            assert (await send(h, "sales@example.test", body))[0] == 250
    failures = store_failures(lines)
    assert len(failures) == 1, lines
    assert "error=ENOSPC" in failures[0] and f"path={data}/" in failures[0]
    nothing_half_written(config)
    assert len(messages(config, "alice")) == 2 and len(queued(config)) == 2


async def pop3_retr_dele_quit(config: Config) -> list[bytes]:
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        await h.send_line("USER alice")
        await h.read_line()
        await h.send_line(f"PASS {PASSWORDS['alice']}")
        assert (await h.read_line()).startswith(b"+OK")
        await h.send_line("RETR 1")
        assert (await h.read_line()).startswith(b"+OK")
        content = await h.read_multiline()
        await h.send_line("DELE 1")
        assert (await h.read_line()).startswith(b"+OK")
        await h.send_line("QUIT")
        assert (await h.read_line()).startswith(b"+OK")
    return content


async def test_real_full_disk_smtp_refuses_pop3_serves_then_recovers(tmp_path: Path) -> None:
    # 2 MB: once space is back, LARGE goes to a Maildir and the queue (two copies).
    with small_tmpfs(tmp_path / "disk", size="2m") as disk:
        config = big_config(disk)
        deliver(config, "alice", b"Subject: before\n\nkept\n")
        filler = fill(disk)
        with captured_log() as lines:
            async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
                await ehlo(h)
                assert await send(h, "sales@example.test", LARGE) == (452, "4.3.1")
                assert await send(h, "alice@example.test", LARGE) == (452, "4.3.1")
            failures = store_failures(lines)
            assert len(failures) == 2, lines  # one line per refused message
            assert all("error=ENOSPC" in f and f"path={disk}/" in f for f in failures)
            nothing_half_written(config)
            # Retrieval and QUIT deletions need no new blocks: they go on.
            assert await pop3_retr_dele_quit(config) == [b"Subject: before", b"", b"kept"]
            assert messages(config, "alice") == []
            filler.unlink()
            async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
                await ehlo(h)
                assert (await send(h, "sales@example.test", LARGE))[0] == 250
        assert len(messages(config, "alice")) == 1 and len(queued(config)) == 1
        nothing_half_written(config)


def test_housekeeping_on_a_full_disk_logs_one_line_and_keeps_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nosend_runners.mail.housekeeping import housekeep
    from nosend_store.queue import Envelope, OutboundQueue

    config = big_config(tmp_path)
    queue = OutboundQueue(config.server.queue_dir)
    qid = queue.enqueue(Envelope.simple("alice@example.test", ["far@remote.test"]), [BODY])
    later = queue.now() + 30 * 86400.0  # overdue: the pass must record its expiry
    with captured_log() as lines:
        with inject(monkeypatch, ("fsync",), errno.ENOSPC, config.server.queue_dir):
            summary = housekeep(config, clock=lambda: later)
    assert summary.errors == 1 and summary.error is not None
    assert "No space left on device" in summary.error
    assert str(config.server.queue_dir / "active" / qid) in summary.error
    passes = [line for line in lines if "event=housekeeping" in line]
    assert len(passes) == 1 and str(config.server.queue_dir) in passes[0]
    assert queue.ids() == [qid]  # not lost: expired and reported on by a later pass
    summary = housekeep(config, clock=lambda: later)
    assert summary.errors == 0 and summary.expired == 1 and queue.ids() == []
    assert len(messages(config, "alice")) == 1  # the failure report


async def test_full_disk_during_bdat_gives_452(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = big_config(tmp_path)
    with captured_log() as lines:
        async with Harness(smtp_session, "smtp", config=config, peer=STRANGER) as h:
            await ehlo(h)
            await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n")
            assert [r.code for r in await h.read_replies(2)] == [250, 250]
            with inject(monkeypatch, ("write", "writev"), errno.ENOSPC, tmp_path / "data"):
                await h.send(f"BDAT {len(LARGE)}\r\n".encode() + LARGE)
                reply = await h.read_reply()
                assert (reply.code, reply.enhanced) == (452, "4.3.1")
            # RFC 3030: the failed chunk ended the transaction; a new one goes through.
            await h.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n")
            assert [r.code for r in await h.read_replies(2)] == [250, 250]
            await h.send(f"BDAT {len(BODY)} LAST\r\n".encode() + BODY)
            assert (await h.read_reply()).code == 250
    assert len(store_failures(lines)) == 1
    assert len(messages(config, "alice")) == 1
    nothing_half_written(config)


async def test_pop3_quit_that_cannot_be_recorded_answers_sys_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deletions' directory fsync fails (ENOSPC from a journal that cannot grow, say):
    # RFC 1939 section 6 has QUIT answer -ERR when removal fails; RFC 3206 SYS/TEMP.
    config = big_config(tmp_path)
    deliver(config, "alice", b"Subject: one\n\nx\n")
    folder = config.maildir_path("alice")
    with captured_log() as lines:
        async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
            assert (await h.read_line()).startswith(b"+OK")
            await h.send_line("USER alice")
            await h.read_line()
            await h.send_line(f"PASS {PASSWORDS['alice']}")
            assert (await h.read_line()).startswith(b"+OK")
            await h.send_line("DELE 1")
            assert (await h.read_line()).startswith(b"+OK")
            with inject(monkeypatch, ("fsync",), errno.ENOSPC, folder):
                await h.send_line("QUIT")
                assert (await h.read_line()).startswith(b"-ERR [SYS/TEMP]")
    failed = [line for line in lines if "event=update_failed" in line]
    assert len(failed) == 1 and "error=ENOSPC" in failed[0] and f"path={folder}/new" in failed[0]
    # The next session works (the lock was released).
    assert await pop3_retr_dele_quit_or_empty(config) == 0


async def pop3_retr_dele_quit_or_empty(config: Config) -> int:
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        assert (await h.read_line()).startswith(b"+OK")
        await h.send_line("USER alice")
        await h.read_line()
        await h.send_line(f"PASS {PASSWORDS['alice']}")
        line = await h.read_line()
        assert line.startswith(b"+OK maildrop has ")
        await h.send_line("QUIT")
        assert (await h.read_line()).startswith(b"+OK")
    return int(line.split()[3])
