"""The cheap per-message path of the store, kept honest: unique names after a fork, names
from many threads, random bits drawn in batches, the normaliser against a plain
reference, staged data that the caller's buffer cannot change, short writes, and a
long-lived MaildirMailbox whose folder disappears."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nosend_store._durable as durable
from nosend_store._durable import LineEndingNormaliser, UniqueNamer, disk_form
from nosend_store.maildir import MaildirMailbox

NAME_RE = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{8})\.(.+)$")


def parts(name: str) -> tuple[int, int, str]:
    """(pid, counter, random) of a unique name."""
    m = NAME_RE.match(name)
    assert m is not None, name
    return int(m.group(3)), int(m.group(4)), m.group(5)


def test_names_carry_pid_counter_and_random_part() -> None:
    namer = UniqueNamer(hostname="h", clock=lambda: 1000.25)
    names = [namer.new_name() for _ in range(3)]
    assert names[0].startswith("1000.M250000P") and names[0].endswith(".h")
    assert [parts(n)[:2] for n in names] == [(os.getpid(), 1), (os.getpid(), 2), (os.getpid(), 3)]
    assert len({parts(n)[2] for n in names}) == 3


def test_forked_child_names_with_its_own_pid_and_fresh_random_bits() -> None:
    namer = UniqueNamer(hostname="h", clock=lambda: 1000.0)
    before = [namer.new_name() for _ in range(3)]  # the pool is drawn in the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report three names and leave without running pytest's exit
        try:
            os.close(read_end)
            os.write(write_end, "\n".join(namer.new_name() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        child = f.read().decode().split("\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent = [namer.new_name() for _ in range(3)]
    assert all(parts(n)[0] == pid for n in child)
    assert all(parts(n)[0] == os.getpid() for n in before + parent)
    # Same counters on both sides of the fork; a pool inherited from the parent would
    # give the same random parts too.
    assert [parts(n)[1] for n in child] == [parts(n)[1] for n in parent] == [4, 5, 6]
    assert {parts(n)[2] for n in child}.isdisjoint(parts(n)[2] for n in parent)


def test_names_from_many_threads_at_one_instant_are_unique() -> None:
    namer = UniqueNamer(hostname="h", clock=lambda: 1000.5)
    results: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        for _ in range(1500):  # several pool refills race with each other
            out.append(namer.new_name())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [n for out in results for n in out]
    assert len(set(names)) == len(names) == 8 * 1500
    assert sorted(parts(n)[1] for n in names) == list(range(1, len(names) + 1))


def test_random_bits_are_drawn_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(durable.os, "urandom", counting)
    namer = UniqueNamer(hostname="h")
    names = [namer.new_name() for _ in range(5000)]
    # 4 + 8 + ... + 512 names, then one draw per 512: not one system call per name.
    assert len(calls) <= 20
    assert calls[0] == 16  # a namer used once draws little
    assert len({parts(n)[2] for n in names}) > 4900  # 32 random bits each


def reference_disk_form(data: bytes) -> bytes:
    """The on-disk form as LineEndingNormaliser documents it, written the slow way."""
    out = re.sub(rb"\r+\n", b"\n", data)
    stripped = out.rstrip(b"\r")
    if stripped != out:
        return stripped + b"\n"  # a trailing CR is the cut-short line end
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\r\r\n", b"xy" * 40, b"\n\r"]),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=200),
)
def test_normaliser_matches_the_reference(pieces: list[bytes], cut: int) -> None:
    data = b"".join(pieces)
    norm = LineEndingNormaliser()
    disk = b"".join(norm.feed(data[i : i + cut]) for i in range(0, len(data), cut))
    disk += norm.finish()
    assert disk == reference_disk_form(data)
    assert norm.wire_size == len(disk) + disk.count(b"\n")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\r\r\n", b"xy" * 40, b"\n\r"]),
        max_size=40,
    )
)
def test_whole_message_disk_form_equals_the_streamed_one(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    norm = LineEndingNormaliser()
    streamed = norm.feed(data) + norm.finish()
    assert disk_form(data) == (streamed, norm.wire_size)
    buf = bytearray(data)
    assert disk_form(buf) == (streamed, norm.wire_size)  # type: ignore[arg-type]
    assert buf == data  # the caller's buffer is left alone


def test_deliver_of_a_list_equals_streamed_delivery(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "box")
    chunks = [b"Subject: s\r", b"\n\r\nline\r\r\n", b"bare\rCR\r\nend"]
    whole = box.deliver(chunks)  # a list: written at once
    streamed = box.deliver(iter(chunks))  # an iterator: streamed
    assert whole.split(",", 1)[1] == streamed.split(",", 1)[1]  # same ,S= and ,W=
    with box.open_message(whole) as a, box.open_message(streamed) as b:
        assert a.read() == b.read() == b"Subject: s\n\nline\nbare\rCR\nend\n"


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from nosend_store.maildir import MaildirMailbox

    def die(step):
        if step == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    body = b"Subject: crash\\r\\n\\r\\n" + b"x" * 70 + b"\\r\\n"
    key = MaildirMailbox(sys.argv[1]).deliver_bytes(body, crash_hook=die)
    print("ACK", key, flush=True)
    """
)


@pytest.mark.parametrize(
    ("kill_at", "visible_after"),
    [("before_fsync", False), ("before_rename", False), ("before_dir_fsync", True)],
)
def test_kill_during_a_whole_message_delivery(
    tmp_path: Path, kill_at: str, visible_after: bool
) -> None:
    path = tmp_path / "box"
    MaildirMailbox(path)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), kill_at], capture_output=True, timeout=20
    )
    assert result.returncode == -9, result.stderr
    assert b"ACK" not in result.stdout  # never acknowledged before durable
    box = MaildirMailbox(path)
    found = []
    for m in box.list_messages():
        with box.open_message(m.key) as f:
            found.append(f.read())
    assert found == ([b"Subject: crash\n\n" + b"x" * 70 + b"\n"] if visible_after else [])


def test_a_reused_caller_buffer_does_not_change_what_was_written(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "box")
    buf = bytearray(b"first line\r\n")
    with box.open_writer() as writer:
        writer.write(buf)  # type: ignore[arg-type]
        buf[:] = b"second\r\n"
        writer.write(buf)  # type: ignore[arg-type]
        buf[:] = b"garbage!\r\n"
        key = writer.commit()
    with box.open_message(key) as f:
        assert f.read() == b"first line\nsecond\n"


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[:7])

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        return real_write(fd, b"".join(buffers)[:5])

    monkeypatch.setattr(durable.os, "write", short_write)
    monkeypatch.setattr(durable.os, "writev", short_writev)
    box = MaildirMailbox(tmp_path / "box")
    body = [b"Subject: s\r\n\r\n", b"line one\r\n", b"line two, longer\r\n", b"end"]
    key = box.deliver(body)
    monkeypatch.undo()
    with box.open_message(key) as f:
        data = f.read()
    assert data == b"Subject: s\n\nline one\nline two, longer\nend\n"
    listed = box.get(key)
    assert listed is not None and listed.size == len(data) + data.count(b"\n")


def test_kept_mailbox_makes_its_folder_again_when_it_disappears(tmp_path: Path) -> None:
    path = tmp_path / "box"
    box = MaildirMailbox(path)
    box.deliver([b"one\r\n"])
    shutil.rmtree(path)  # an administrator removes the mailbox while the server runs
    key = box.deliver([b"two\r\n"])
    assert [m.key for m in box.list_messages()] == [key]
    assert sorted(os.listdir(path)) == ["cur", "new", "tmp"]


def test_kept_mailbox_without_create_does_not_make_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "box"
    MaildirMailbox(path)
    box = MaildirMailbox(path, create=False)
    shutil.rmtree(path)
    with pytest.raises(FileNotFoundError):
        box.deliver([b"x\r\n"])
    assert not path.exists()
