"""Maildir delivery, listing, sizes, flags, deletion and the POP3 session view."""

from __future__ import annotations

import multiprocessing
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nosend_proto._pop3_stuffing import wire_size as pop3_wire_size
from nosend_store._durable import LineEndingNormaliser, UniqueNamer, crlf_chunks
from nosend_store.drop import MessageGone
from nosend_store.locks import LockBusy
from nosend_store.maildir import MaildirMailbox, uidl_for_key


def wire_of(message: bytes) -> bytes:
    """Reference: the message as RETR sends it before dot-stuffing (RFC 1939 section 3)."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def test_deliver_writes_lf_file_in_new_with_sizes_in_name(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"Subject: hi\r\n", b"\r\nbody line\r\n"])
    files = os.listdir(tmp_path / "box" / "new")
    assert files == [key]
    assert (tmp_path / "box" / "new" / key).read_bytes() == b"Subject: hi\n\nbody line\n"
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+R[0-9a-f]{8}\.[^/:]+,S=23,W=26", key)
    assert os.listdir(tmp_path / "box" / "tmp") == []


def test_listing_reports_wire_size_and_uidl(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    msg = b"From: a@b\r\n\r\nno final newline"
    key = mb.deliver([msg])
    [entry] = mb.list_messages()
    assert entry.key == key
    assert entry.size == len(wire_of(msg))
    assert entry.uidl == key  # what Dovecot reports with pop3_uidl_format = %f
    assert b"".join(mb.wire_chunks(key)) == wire_of(msg)


def test_crlf_split_across_chunks_is_one_line_end(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"a\r", b"\nb\r", b"\n"])
    with mb.open_message(key) as f:
        assert f.read() == b"a\nb\n"


def test_lone_cr_is_kept(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"a\rb\r\n"])
    with mb.open_message(key) as f:
        assert f.read() == b"a\rb\n"
    assert mb.list_messages()[0].size == len(b"a\rb\r\n")


def test_cr_before_line_end_belongs_to_the_line_end(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"a\r\r", b"\r", b"\nb\r"])
    with mb.open_message(key) as f:
        assert f.read() == b"a\nb\n"
    assert mb.list_messages()[0].size == len(b"a\r\nb\r\n")


def test_empty_message_has_size_zero(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([])
    assert key.endswith(",S=0,W=0")
    assert mb.list_messages()[0].size == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"xyz", b"."]), max_size=30),
    st.integers(min_value=1, max_value=7),
)
def test_normaliser_wire_size_matches_streamed_bytes(parts: list[bytes], cut: int) -> None:
    # Property: whatever the chunking, the wire size counted while writing equals the
    # octets crlf_chunks yields from the disk form, and chunking never changes the result.
    data = b"".join(parts)
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    norm = LineEndingNormaliser()
    disk = b"".join(norm.feed(c) for c in chunks) + norm.finish()
    whole = LineEndingNormaliser()
    assert disk == whole.feed(data) + whole.finish()
    assert norm.disk_size == len(disk)
    import io

    wire = b"".join(crlf_chunks(io.BytesIO(disk), chunk_size=3))
    assert len(wire) == norm.wire_size
    assert disk == b"" or disk.endswith(b"\n")
    # No CR before LF on disk: every reader (Dovecot, the POP3 encoder) agrees on lines.
    assert b"\r\n" not in disk
    if b"\r" not in data:
        assert wire == wire_of(data)
    # Contract with the POP3 engine: its size for our disk form is our wire size.
    assert pop3_wire_size(disk) == norm.wire_size


def test_unique_names_differ_within_one_microsecond() -> None:
    namer = UniqueNamer(hostname="h/o:st", clock=lambda: 1000.5)
    names = {namer.new_name() for _ in range(1000)}
    assert len(names) == 1000
    assert all(n.endswith(".h\\057o\\072st") and "/" not in n for n in names)


def test_names_sort_as_strings_in_the_order_they_were_made() -> None:
    # 0.099999 s then 0.1 s: unpadded, "M99999" would sort after "M100000"
    clock = iter([1000.099999, 1000.1, 1000.100001, 1000.5, 1001.0078125])
    namer = UniqueNamer(hostname="h", clock=lambda: next(clock))
    names = [namer.new_name() for _ in range(5)]
    assert sorted(names) == names
    assert names[3].startswith("1000.M500000P") and names[4].startswith("1001.M007812P")


def test_uidl_is_stable_printable_and_short() -> None:
    key = "1.M2P3Q4R00000000." + "h" * 80 + ",S=1,W=2"
    uidl = uidl_for_key(key)
    assert uidl == uidl_for_key(key)
    assert 1 <= len(uidl) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uidl)


def test_listing_is_sorted_by_delivery_time_and_stable_across_instances(tmp_path: Path) -> None:
    clock = iter([100.0, 50.0, 75.0])
    namer = UniqueNamer(hostname="h", clock=lambda: next(clock))
    mb = MaildirMailbox(tmp_path / "box", namer=namer)
    keys = [mb.deliver([f"n{i}\n".encode()]) for i in range(3)]
    listing = mb.list_messages()
    assert [m.key for m in listing] == [keys[1], keys[2], keys[0]]
    again = MaildirMailbox(tmp_path / "box", create=False).list_messages()
    assert [(m.uidl, m.size) for m in again] == [(m.uidl, m.size) for m in listing]


def test_foreign_file_without_w_is_measured_once_and_cached(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    foreign = tmp_path / "box" / "cur" / "123.foreign.host:2,S"
    foreign.write_bytes(b"Subject: x\n\nbody\n")
    [entry] = mb.list_messages()
    assert (entry.size, entry.flags, entry.uidl) == (20, "S", "123.foreign.host")
    assert (tmp_path / "box" / "nosend-wiresizes").exists()
    # The cache, not the file, answers next time: change the file behind our back.
    foreign.write_bytes(b"x" * 500)
    assert mb.list_messages()[0].size == 20
    foreign.unlink()
    other = tmp_path / "box" / "new" / "456.other.host"
    other.write_bytes(b"x\n")
    assert [m.size for m in mb.list_messages()] == [3]
    # Entries of vanished files are pruned whenever the cache is consulted.
    assert b"123.foreign" not in (tmp_path / "box" / "nosend-wiresizes").read_bytes()


def test_foreign_file_with_crlf_and_no_final_newline(tmp_path: Path) -> None:
    # Some delivery agents store CRLF; sizes and streamed bytes must still agree.
    mb = MaildirMailbox(tmp_path / "box")
    raw = b"Subject: x\r\n\r\nbody\nlast"
    (tmp_path / "box" / "new" / "789.crlf.host").write_bytes(raw)
    [entry] = mb.list_messages()
    wire = b"".join(mb.wire_chunks(entry.key))
    assert wire == b"Subject: x\r\n\r\nbody\r\nlast\r\n"
    assert entry.size == len(wire) == pop3_wire_size(raw)


def test_flags_move_to_cur_sorted_and_keep_key(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"x\n"])
    msg = mb.set_flags(key, "SR")
    assert (msg.subdir, msg.flags, msg.key) == ("cur", "RS", key)
    assert os.listdir(tmp_path / "box" / "cur") == [f"{key}:2,RS"]
    assert os.listdir(tmp_path / "box" / "new") == []
    assert mb.add_flags(key, "F").flags == "FRS"
    with pytest.raises(ValueError):
        mb.set_flags(key, "X")


def test_open_follows_a_rename_by_a_mua(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"body\n"])
    with mb.pop3_session() as session:
        os.rename(tmp_path / "box" / "new" / key, tmp_path / "box" / "cur" / f"{key}:2,S")
        assert b"".join(session.wire_chunks(1)) == b"body\r\n"


def test_message_removed_by_another_program_is_gone(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    key = mb.deliver([b"body\n"])
    with mb.pop3_session() as session:
        os.unlink(tmp_path / "box" / "new" / key)
        with pytest.raises(MessageGone):
            session.open(1)
        session.mark_deleted(1)
        assert session.commit() == 1


def test_pop3_deletions_only_at_commit(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    keys = [mb.deliver([f"m{i}\n".encode()]) for i in range(3)]
    session = mb.pop3_session()
    assert session.mark_deleted(2)
    assert not session.mark_deleted(2)
    assert not session.mark_deleted(9)
    assert [m.number for m in session.visible()] == [1, 3]
    with pytest.raises(KeyError):
        session.open(2)
    session.close()  # dropped connection: nothing deleted (RFC 1939 section 6)
    assert len(mb.list_messages()) == 3
    session = mb.pop3_session()
    session.mark_deleted(1)
    session.mark_deleted(3)
    session.reset()
    session.mark_deleted(3)
    assert session.commit() == 1
    assert [m.key for m in mb.list_messages()] == keys[:2]


def test_retrieved_messages_are_marked_seen_at_quit_only(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    keys = [mb.deliver([f"m{i}\n".encode()]) for i in range(3)]
    mb.set_flags(keys[2], "R")
    session = mb.pop3_session()
    for n in (1, 2, 3):
        session.note_retrieved(n)
    session.close()  # dropped: no flag changes
    assert [m.flags for m in mb.list_messages()] == ["", "", "R"]
    session = mb.pop3_session()
    for n in (1, 2, 3):
        session.note_retrieved(n)
    session.mark_deleted(2)
    session.commit()
    assert [(m.key, m.flags, m.subdir) for m in mb.list_messages()] == [
        (keys[0], "S", "cur"),
        (keys[2], "RS", "cur"),
    ]


def test_snapshot_hides_later_deliveries_until_next_session(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    mb.deliver([b"one\n"])
    with mb.pop3_session() as session:
        mb.deliver([b"two\n"])
        assert len(session.visible()) == 1
    with mb.pop3_session() as session:
        assert len(session.visible()) == 2


def test_session_lock_excludes_second_session_and_is_released(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    first = mb.pop3_session()
    with pytest.raises(LockBusy):
        mb.pop3_session()
    with pytest.raises(LockBusy):
        MaildirMailbox(tmp_path / "box").pop3_session(timeout=0.1)
    first.commit()
    mb.pop3_session().close()


def test_writer_abort_and_exception_leave_nothing(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    w = mb.open_writer()
    w.write(b"partial")
    assert len(os.listdir(tmp_path / "box" / "tmp")) == 1
    w.abort()

    def failing():  # type: ignore[no-untyped-def]
        yield b"x\n"
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        mb.deliver(failing())
    assert os.listdir(tmp_path / "box" / "tmp") == []
    assert mb.list_messages() == []


def test_big_message_streams_in_chunks(tmp_path: Path) -> None:
    mb = MaildirMailbox(tmp_path / "box")
    line = b"0123456789" * 7 + b"\r\n"
    key = mb.deliver(line for _ in range(20000))
    [entry] = mb.list_messages()
    assert entry.size == len(line) * 20000
    sizes = [len(c) for c in mb.wire_chunks(key, chunk_size=4096)]
    assert max(sizes) <= 2 * 4096 and sum(sizes) == entry.size


def test_clean_tmp_removes_only_old_files(tmp_path: Path) -> None:
    now = [1_000_000.0]
    mb = MaildirMailbox(tmp_path / "box", clock=lambda: now[0])
    old = tmp_path / "box" / "tmp" / "old"
    old.write_bytes(b"x")
    os.utime(old, (now[0] - 40 * 3600, now[0] - 40 * 3600))
    fresh = tmp_path / "box" / "tmp" / "fresh"
    fresh.write_bytes(b"x")
    os.utime(fresh, (now[0], now[0]))
    assert mb.clean_tmp() == 1
    assert os.listdir(tmp_path / "box" / "tmp") == ["fresh"]


def _deliver_many(path: str, worker: int, count: int) -> None:
    mb = MaildirMailbox(path)
    for i in range(count):
        mb.deliver([f"From: w{worker}\n\nmessage {i}\n".encode()])


def test_concurrent_deliveries_from_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "box")
    MaildirMailbox(path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_deliver_many, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    listing = MaildirMailbox(path).list_messages()
    assert len(listing) == 200
    assert len({m.uidl for m in listing}) == 200
    bodies = set()
    for m in listing:
        with open(tmp_path / "box" / m.subdir / m.filename, "rb") as f:
            bodies.add(f.read())
    assert len(bodies) == 200


def test_concurrent_deliveries_from_threads_sharing_one_mailbox(tmp_path: Path) -> None:
    # The anyio runner calls deliver from worker threads with one shared object.
    from concurrent.futures import ThreadPoolExecutor

    mb = MaildirMailbox(tmp_path / "box")

    def one(i: int) -> str:
        with mb.open_writer() as w:
            w.write(f"Subject: {i}\r\n\r\n".encode())
            w.write(b"body\r\n")
            return w.commit()

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(one, range(200)))
    assert len(set(keys)) == 200
    listing = mb.list_messages()
    assert sorted(m.key for m in listing) == sorted(keys)
    subjects = set()
    for m in listing:
        with mb.open_message(m.key) as f:
            subjects.add(f.readline())
    assert len(subjects) == 200
