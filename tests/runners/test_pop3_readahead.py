"""POP3 RETR read-ahead and whole-message reads (``nosend_runners.session.pop3``, reading
through ``nosend_store.message_reader``).

A RETR's worker-thread call also reads the next messages whole (``READ_AHEAD``), and a
message up to ``WHOLE_MAX`` is read in one piece. Neither may change a byte on the wire,
the LIST sizes, what DELE/QUIT do, or the memory bound; these transcripts check that,
with files written by other programs (CRLF, no final newline, dot lines) mixed in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nosend_proto._pop3_stuffing import MessageEncoder
from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.testing.harness import Harness
from nosend_store import message_reader as reader
from nosend_store.config import Config
from tests.runners.session_support import (
    LOOPBACK,
    PASSWORDS,
    deliver,
    mailbox,
    make_config,
    messages,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


class Calls:
    """Counts the opening worker-thread calls and what each one read ahead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.msgnos: list[int] = []
        self.follow: list[tuple[int, ...]] = []
        self.ahead_octets: list[int] = []
        real = reader.open_and_read

        def spy(drop: Any, msgno: int, follow: tuple[int, ...]) -> Any:
            result = real(drop, msgno, follow)
            self.msgnos.append(msgno)
            self.follow.append(follow)
            self.ahead_octets.append(sum(len(data) for _, data in result[3]))
            return result

        monkeypatch.setattr(reader, "open_and_read", spy)


def wire(content: bytes) -> bytes:
    """What RETR must send after its status line (stuffed, CRLF, final ``.CRLF``)."""
    encoder = MessageEncoder()
    return encoder.feed(content) + encoder.finish() if content else encoder.finish()


def write_foreign(config: Config, name: str, filename: str, content: bytes) -> None:
    """A message file dropped into new/ by another program, as it wrote it."""
    path = Path(config.maildir_path(name)) / "new" / filename
    path.write_bytes(content)


async def login(h: Harness, user: str = "alice") -> None:
    assert (await h.read_line()).startswith(b"+OK")
    await h.send_line(f"USER {user}")
    await h.read_line()
    await h.send_line(f"PASS {PASSWORDS[user]}")
    assert (await h.read_line()).startswith(b"+OK")


async def read_until_terminator(h: Harness, status: bytes) -> bytes:
    """The raw multi-line body (still stuffed) after ``status``, up to CRLF.CRLF."""
    line = await h.read_line()
    assert line == status, line
    raw = b""
    while not (raw == b".\r\n" or raw.endswith(b"\r\n.\r\n")):
        raw += await h.read_line() + b"\r\n"
    return raw


async def retr(h: Harness, msgno: int, size: int) -> bytes:
    await h.send_line(f"RETR {msgno}")
    return await read_until_terminator(h, f"+OK {size} octets".encode())


def varied_contents() -> list[bytes]:
    prose = b"Many men mean no harm.\n.a dot line\n..two dots\nJune\n"
    return [
        b"Subject: one\n\nbody\n",
        b"Subject: dots\n\n" + prose * 40,
        b"Subject: two\n\n" + b"line\n" * 3000,
        b".leading dot\n\nno final newline",
        b"",
    ]


async def test_every_retr_in_order_is_byte_exact_and_matches_list(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = varied_contents()
    for content in contents:
        if content:
            deliver(config, "alice", content)
    foreign = [
        b"Subject: crlf\r\n\r\nwritten\r\nwith CRLF\r\n.dot\r\n",
        b"Subject: cr runs\r\r\n\r\nbare\rCR and CR runs\r\r\n.x",
    ]
    for i, content in enumerate(foreign):
        write_foreign(config, "alice", f"9999999999.M{i}P1.other", content)
    calls = Calls(monkeypatch)
    listing = mailbox(config, "alice").list_messages()
    stored = messages(config, "alice")
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        for number, (entry, content) in enumerate(zip(listing, stored, strict=True), 1):
            got = await retr(h, number, entry.size)
            assert got == wire(content)
            # LIST size: the octets sent, without the stuffing dots and final ".CRLF".
            unstuffed = got[:-3].replace(b"\r\n..", b"\r\n.")
            if unstuffed.startswith(b".."):
                unstuffed = unstuffed[1:]
            assert len(unstuffed) == entry.size
        await h.send_line("QUIT")
        assert (await h.read_line()).startswith(b"+OK")
    assert len(stored) == 6
    # Small messages in order: far fewer worker-thread calls than RETRs.
    assert len(calls.msgnos) < len(stored)
    assert all(octets <= reader.READ_AHEAD for octets in calls.ahead_octets)
    assert len(messages(config, "alice")) == 6  # no DELE, nothing removed


async def test_out_of_order_retr_reads_again_and_top_does_not_read_ahead(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = [f"Subject: m{i}\n\nbody {i}\n".encode() for i in range(1, 6)]
    for content in contents:
        deliver(config, "alice", content)
    listing = mailbox(config, "alice").list_messages()
    calls = Calls(monkeypatch)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        await h.send_line("TOP 1 0")
        assert await read_until_terminator(h, b"+OK top of message follows") == (
            b"Subject: m1\r\n\r\n.\r\n"
        )
        assert calls.follow == [()]
        assert await retr(h, 4, listing[3].size) == wire(contents[3])
        assert calls.follow[-1] == (5,)
        assert await retr(h, 2, listing[1].size) == wire(contents[1])  # not read ahead
        assert calls.msgnos == [1, 4, 2]
        assert await retr(h, 3, listing[2].size) == wire(contents[2])  # read ahead by 2
        assert await retr(h, 5, listing[4].size) == wire(contents[4])
        assert calls.msgnos == [1, 4, 2]


async def test_deleted_messages_are_not_read_ahead_nor_sent(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = [f"Subject: m{i}\n\nbody {i}\n".encode() for i in range(1, 5)]
    for content in contents:
        deliver(config, "alice", content)
    listing = mailbox(config, "alice").list_messages()
    calls = Calls(monkeypatch)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        await h.send_line("DELE 2")
        assert (await h.read_line()).startswith(b"+OK")
        assert await retr(h, 1, listing[0].size) == wire(contents[0])
        assert calls.follow == [(3, 4)]
        # Read ahead, then marked: the engine refuses it, whatever the session holds.
        await h.send_line("DELE 3")
        assert (await h.read_line()).startswith(b"+OK")
        await h.send_line("RETR 3")
        assert await h.read_line() == b"-ERR message 3 already deleted"
        await h.send_line("RSET")
        assert (await h.read_line()).startswith(b"+OK")
        assert await retr(h, 3, listing[2].size) == wire(contents[2])
    # Dropped without QUIT: nothing was deleted.
    assert len(messages(config, "alice")) == 4


async def test_message_removed_before_read_ahead_still_fails_its_own_retr(
    config: Config,
) -> None:
    keys = [deliver(config, "alice", f"Subject: m{i}\n\nbody\n".encode()) for i in range(3)]
    listing = mailbox(config, "alice").list_messages()
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        mailbox(config, "alice").delete([keys[1]])  # another program (a MUA)
        assert await retr(h, 1, listing[0].size) == wire(b"Subject: m0\n\nbody\n")
        await h.send_line("RETR 2")
        assert (await h.read_line()).startswith(b"-ERR [SYS/TEMP]")
        assert await retr(h, 3, listing[2].size) == wire(b"Subject: m2\n\nbody\n")


async def test_messages_above_the_bounds_stream_in_chunks(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small bounds so that the streaming paths run on small files.
    monkeypatch.setattr(reader, "WHOLE_MAX", 4096)
    monkeypatch.setattr(reader, "READ_CHUNK", 1000)
    monkeypatch.setattr(reader, "READ_AHEAD", 3000)
    reads: list[int] = []
    real_read_some = reader.read_some

    def read_some(f: Any, limit: int) -> tuple[bytes, bool]:
        data, eof = real_read_some(f, limit)
        reads.append(len(data))
        return data, eof

    monkeypatch.setattr(reader, "read_some", read_some)
    big = b"Subject: big\n\n" + b"".join(b".%05d line\n" % i for i in range(800))
    medium = b"Subject: medium\n\n" + b"x" * 2500 + b"\n"
    small = b"Subject: small\n\nsmall\n"
    for content in (small, big, medium, small, small):
        deliver(config, "alice", content)
    listing = mailbox(config, "alice").list_messages()
    calls = Calls(monkeypatch)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        for number, content in enumerate((small, big, medium, small, small), 1):
            assert await retr(h, number, listing[number - 1].size) == wire(content)
    # The big one went out in READ_CHUNK pieces and nothing ever read more than the
    # larger of READ_CHUNK and WHOLE_MAX at once.
    assert max(reads) <= 4096 and reads.count(1000) >= 8
    # RETR 1 could not read ahead past the big message (it does not fit READ_AHEAD);
    # the medium one fits only alone.
    assert calls.follow[0] == ()
    assert all(octets <= 3000 for octets in calls.ahead_octets)
    assert calls.msgnos[:2] == [1, 2]


async def test_read_ahead_of_a_grown_file_is_dropped(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(config, "alice", b"Subject: a\n\nfirst\n")
    deliver(config, "alice", b"Subject: b\n\nsecond\n")
    listing = mailbox(config, "alice").list_messages()
    path = Path(config.maildir_path("alice")) / listing[1].subdir / listing[1].filename
    real_stored_size = reader.stored_size

    def stale_size(f: Any) -> int | None:
        # The file grows between the size hint and the read (another program appending
        # to a file it should not touch): the end is found by reading, not trusted.
        size = real_stored_size(f)
        if size is not None and os.fstat(f.fileno()).st_ino == path.stat().st_ino:
            return size - 5
        return size

    monkeypatch.setattr(reader, "stored_size", stale_size)
    calls = Calls(monkeypatch)
    async with Harness(pop3_session, "pop3", config=config, peer=LOOPBACK) as h:
        await login(h)
        assert await retr(h, 1, listing[0].size) == wire(b"Subject: a\n\nfirst\n")
        assert calls.ahead_octets == [0]
        assert await retr(h, 2, listing[1].size) == wire(b"Subject: b\n\nsecond\n")
        assert calls.msgnos == [1, 2]
