"""The durable UIDL record of a remote POP3 account: statuses, requests, pruning, the lock,
and a file that never shows a half record whatever was torn off its end."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosend_store.fetch_state import (
    FETCH_DIR,
    FetchRecord,
    FetchState,
    FetchStatus,
    StagedCopies,
)
from nosend_store.locks import LockBusy

D, H = FetchStatus.DELIVERED, FetchStatus.HELD
F, X = FetchStatus.FETCH_REQUESTED, FetchStatus.DELETE_REQUESTED


def lines_of(state_path: Path) -> list[bytes]:
    return state_path.read_bytes().splitlines(keepends=True)


def test_a_new_account_starts_empty_and_records_survive_reopening(tmp_path: Path) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        assert state.path == tmp_path / FETCH_DIR / "isp.uidl"
        assert state.path.exists() and len(state) == 0
        assert not state.seen("msg-1") and state.status("msg-1") is None
        state.record("msg-1")
        state.record("msg-2", size=1234)
        assert state.seen("msg-1") and state.status("msg-1") is D
    with FetchState.open(tmp_path, "isp") as state:
        assert dict(state.records()) == {
            "msg-1": FetchRecord(D, None),
            "msg-2": FetchRecord(D, 1234),
        }
    # Each account has its own record.
    with FetchState.open(tmp_path, "other") as state:
        assert len(state) == 0


def test_recording_a_delivered_uidl_again_writes_nothing(tmp_path: Path) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        state.record("a")
        size = state.path.stat().st_size
        state.record("a")
        assert state.path.stat().st_size == size


def test_held_messages_and_the_requests_about_them(tmp_path: Path) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        state.hold("big", 50_000_000)
        state.hold("big", 50_000_000)  # the same again: nothing to write
        assert state.records()["big"] == FetchRecord(H, 50_000_000)
        assert len(lines_of(state.path)) == 1
        state.request_delete("big")
        assert state.status("big") is X
        state.request_fetch("big")  # changed their mind
        assert state.records()["big"] == FetchRecord(F, 50_000_000)
        with pytest.raises(ValueError, match="cannot hold"):
            state.hold("big", 50_000_000)  # the request must be acted on, not lost
        state.record("big")  # fetched after all
        assert state.records()["big"] == FetchRecord(D, 50_000_000)
        with pytest.raises(ValueError, match="already delivered"):
            state.request_fetch("big")
        with pytest.raises(ValueError, match="already delivered"):
            state.request_delete("big")
        with pytest.raises(ValueError, match="cannot hold a message whose status is 'delivered'"):
            state.hold("big", 1)
        with pytest.raises(KeyError):
            state.request_fetch("unknown")
        with pytest.raises(ValueError, match="bad message size -1"):
            state.hold("other", -1)
        with pytest.raises(ValueError, match="bad message size"):
            state.record("other", 10**20)  # more digits than a record keeps
        state.hold("other", 10)
        state.request_delete("other")
    with FetchState.open(tmp_path, "isp") as state:
        assert dict(state.records()) == {
            "big": FetchRecord(D, 50_000_000),
            "other": FetchRecord(X, 10),
        }
        # Superseded records were dropped when the file was opened.
        assert len(lines_of(state.path)) == 2


def test_forget_missing_prunes_what_the_server_no_longer_has(tmp_path: Path) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        for uidl in ("a", "b", "c", "d"):
            state.record(uidl)
        state.hold("e", 99)
        assert state.forget_missing(["b", "e", "new-one"]) == ("a", "c", "d")
        assert list(state.records()) == ["b", "e"]
        assert len(lines_of(state.path)) == 2
        assert state.forget_missing(["b", "e"]) == ()
        state.record("f")  # appends still reach the rewritten file
    with FetchState.open(tmp_path, "isp") as state:
        assert dict(state.records()) == {
            "b": FetchRecord(D),
            "e": FetchRecord(H, 99),
            "f": FetchRecord(D),
        }
        assert state.forget_missing([]) == ("b", "e", "f")
    with FetchState.open(tmp_path, "isp") as state:
        assert len(state) == 0 and state.path.read_bytes() == b""


@pytest.mark.parametrize(
    "uidl", ["", "two words", "x" * 71, "caf\u00e9", "tab\there", "new\nline", "\x7f"]
)
def test_only_rfc_1939_unique_ids_are_recorded(tmp_path: Path, uidl: str) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        with pytest.raises(ValueError, match="not an RFC 1939 unique-id") as info:
            state.record(uidl)
        if uidl:
            assert uidl not in str(info.value)
        with pytest.raises(ValueError):
            state.hold(uidl, 1)
        assert state.path.read_bytes() == b""


def test_the_widest_unique_ids_are_kept_exactly(tmp_path: Path) -> None:
    every = "".join(chr(c) for c in range(0x21, 0x7F))
    uidls = [every[:70], every[70:], "!" * 70, "~"]
    with FetchState.open(tmp_path, "isp") as state:
        for uidl in uidls:
            state.record(uidl)
    with FetchState.open(tmp_path, "isp") as state:
        assert list(state.records()) == uidls


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 65])
def test_account_names_that_are_not_safe_file_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="bad account name"):
        FetchState.open(tmp_path, name)


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    first = FetchState.open(tmp_path, "isp")
    with pytest.raises(LockBusy):
        FetchState.open(tmp_path, "isp")
    FetchState.open(tmp_path, "other").close()  # another account is independent
    first.close()
    first.close()  # idempotent
    with FetchState.open(tmp_path, "isp"):
        pass
    with pytest.raises(ValueError, match="closed"):
        first.record("late")


def _valid_log(tmp_path: Path) -> tuple[Path, bytes, list[tuple[str, FetchRecord]]]:
    records = [
        ("a", FetchRecord(D)),
        ("bb", FetchRecord(H, 7_000_000)),
        ("ccc", FetchRecord(D, 12)),
        ("bb", FetchRecord(F, 7_000_000)),
    ]
    with FetchState.open(tmp_path, "isp") as state:
        state.record("a")
        state.hold("bb", 7_000_000)
        state.record("ccc", 12)
        state.request_fetch("bb")
        path = state.path
    return path, path.read_bytes(), records


def test_a_torn_end_never_shows_a_half_record(tmp_path: Path) -> None:
    """Every possible cut of the log: what is shown is exactly its whole lines."""
    path, log, records = _valid_log(tmp_path)
    assert log.count(b"\n") == len(records)
    ends = [i + 1 for i, byte in enumerate(log) if byte == ord("\n")]
    for cut in range(len(log) + 1):
        path.write_bytes(log[:cut])
        complete = sum(1 for end in ends if end <= cut)
        expected: dict[str, FetchRecord] = {}
        for uidl, record in records[:complete]:
            expected[uidl] = record
        with FetchState.open(tmp_path, "isp") as state:
            assert dict(state.records()) == expected, cut
            # The torn part is gone from the file, so the next append starts a clean line.
            state.record("next")
        with FetchState.open(tmp_path, "isp") as state:
            assert dict(state.records()) == {**expected, "next": FetchRecord(D)}, cut
            assert len(lines_of(state.path)) == len(state)


@pytest.mark.parametrize(
    "damage",
    [
        b"\0" * 300,  # a power cut on a filesystem that grew the file before the data
        b"D a - 00000000\n",  # a wrong checksum
        b"D a -\n",  # no checksum
        b"Q a - 12345678\n",  # no such status
        b"garbage without end",
    ],
)
def test_damaged_lines_are_not_records(tmp_path: Path, damage: bytes) -> None:
    path, log, records = _valid_log(tmp_path)
    path.write_bytes(log + damage)
    with FetchState.open(tmp_path, "isp") as state:
        assert dict(state.records()) == dict(records)
    # Rewritten: one whole line per UIDL, the damage gone.
    rewritten = path.read_bytes()
    assert damage not in rewritten and len(rewritten.splitlines()) == 3
    assert rewritten.endswith(b"\n") and rewritten.splitlines()[1].startswith(b"F bb ")


def test_a_failed_append_leaves_no_partial_line_and_records_nothing(tmp_path: Path) -> None:
    failing = {"step": ""}

    def hook(step: str) -> None:
        if step == failing["step"]:
            raise OSError(28, "No space left on device")

    with FetchState.open(tmp_path, "isp", crash_hook=hook) as state:
        state.record("a")
        before = state.path.read_bytes()
        for step in ("before_write", "before_fsync"):
            failing["step"] = step
            with pytest.raises(OSError):
                state.record("b")
            # Written but not fsynced counts as not recorded: the caller must not DELE.
            assert not state.seen("b")
            assert state.path.read_bytes() == before
        failing["step"] = ""
        state.record("c")
    with FetchState.open(tmp_path, "isp") as state:
        assert list(state.records()) == ["a", "c"]


def test_a_failed_rewrite_keeps_the_old_file_whole(tmp_path: Path) -> None:
    failing = {"step": ""}

    def hook(step: str) -> None:
        if step == failing["step"]:
            raise OSError(5, "Input/output error")

    with FetchState.open(tmp_path, "isp", crash_hook=hook) as state:
        for uidl in ("a", "b", "c"):
            state.record(uidl)
        before = state.path.read_bytes()
        for step in ("before_fsync", "before_rename"):
            failing["step"] = step
            with pytest.raises(OSError):
                state.forget_missing(["b"])
            assert state.path.read_bytes() == before
            assert list(state.path.parent.glob("*.tmp")) == []
            assert list(state.records()) == ["a", "b", "c"]
        # After the rename, the old file is gone: no more appends to it.
        failing["step"] = "before_dir_fsync"
        with pytest.raises(OSError):
            state.forget_missing(["b"])
        with pytest.raises(ValueError, match="closed"):
            state.record("d")
    with FetchState.open(tmp_path, "isp") as state:
        assert list(state.records()) == ["b"]


def test_a_leftover_temporary_file_is_removed_on_open(tmp_path: Path) -> None:
    with FetchState.open(tmp_path, "isp") as state:
        state.record("a")
        tmp = state.path.with_name(state.path.name + ".tmp")
    tmp.write_bytes(b"half a rewr")
    with FetchState.open(tmp_path, "isp") as state:
        assert list(state.records()) == ["a"]
    assert not tmp.exists()


# -- pending deliveries: the window between the Maildir rename and the record ---------------


def _maildir_files(maildir: Path) -> list[str]:
    return sorted(p.name for sub in ("new", "cur") for p in (maildir / sub).iterdir())


def test_a_pending_delivery_left_in_tmp_is_rolled_forward_on_open(tmp_path: Path) -> None:
    box = tmp_path / "mail" / "alice"
    with FetchState.open(tmp_path, "isp") as state:
        copies = StagedCopies([box])
        copies.write(b"Subject: x\r\n\r\nbody\r\n")
        keys = copies.finish()
        state.begin("u1", 20, keys)
        assert state.status("u1") is FetchStatus.PENDING
        # crash here: the copy is complete in tmp/, not yet in new/
    assert _maildir_files(box) == []
    with FetchState.open(tmp_path, "isp") as state:
        assert state.records()["u1"] == FetchRecord(D, 20)
    assert _maildir_files(box) == [keys[0][1]]
    assert (box / "new" / keys[0][1]).read_bytes() == b"Subject: x\n\nbody\n"
    assert list((box / "tmp").iterdir()) == []


def test_a_published_pending_delivery_counts_as_delivered_even_from_cur(tmp_path: Path) -> None:
    boxes = [tmp_path / "mail" / "alice", tmp_path / "mail" / "bob"]
    with FetchState.open(tmp_path, "isp") as state:
        copies = StagedCopies(boxes)
        copies.write(b"body\n")
        keys = copies.finish()
        state.begin("u1", 5, keys)
        copies.publish()
    # a reader already moved alice's copy to cur/ with flags
    (boxes[0] / "new" / keys[0][1]).rename(boxes[0] / "cur" / (keys[0][1] + ":2,S"))
    with FetchState.open(tmp_path, "isp") as state:
        assert state.status("u1") is D
    assert len(_maildir_files(boxes[0])) == len(_maildir_files(boxes[1])) == 1


def test_a_pending_delivery_whose_copy_vanished_reverts(tmp_path: Path) -> None:
    box = tmp_path / "mail" / "alice"
    with FetchState.open(tmp_path, "isp") as state:
        state.hold("big", 9000, [("subject", "huge")])
        state.request_fetch("big", link="harbour")
        copies = StagedCopies([box])
        copies.write(b"body\n")
        state.begin("big", 9000, copies.finish())
        state.begin("new", 5, StagedCopies([box]).finish())
        for tmp in (box / "tmp").iterdir():
            tmp.unlink()  # swept as stale before the next session
    with FetchState.open(tmp_path, "isp") as state:
        # back to what it was: fetched again rather than lost
        assert state.records()["big"] == FetchRecord(
            F, 9000, link="harbour", info=(("subject", "huge"),))
        assert not state.seen("new")


def test_a_pending_notice_becomes_held_with_its_summary(tmp_path: Path) -> None:
    box = tmp_path / "mail" / "alice"
    info = (("from", "Ann <ann@example.org>"), ("subject", "Fotos ünd mehr"))
    with FetchState.open(tmp_path, "isp") as state:
        copies = StagedCopies([box])
        copies.write(b"notice\n")
        state.begin("big", 10**7, copies.finish(), then=H, info=info)
    with FetchState.open(tmp_path, "isp") as state:
        record = state.records()["big"]
        assert record.status is H and record.info == info and record.size == 10**7
        assert record.get("subject") == "Fotos ünd mehr"
        state.hold("big", 10**7)  # the fetch code confirming: nothing changes
        assert state.records()["big"].info == info


def test_records_written_before_the_extra_field_still_read(tmp_path: Path) -> None:
    import zlib

    (tmp_path / FETCH_DIR).mkdir()
    body = b"H big 9000"
    (tmp_path / FETCH_DIR / "isp.uidl").write_bytes(b"%s %08x\n" % (body, zlib.crc32(body)))
    with FetchState.open(tmp_path, "isp") as state:
        assert state.records()["big"] == FetchRecord(H, 9000)
        state.request_fetch("big", link="harbour")
    with FetchState.open(tmp_path, "isp") as state:
        assert state.records()["big"] == FetchRecord(F, 9000, link="harbour")


def test_staged_copies_are_ordinary_maildir_messages(tmp_path: Path) -> None:
    from nosend_store.maildir import MaildirMailbox

    box = tmp_path / "alice"
    message = b"Subject: s\r\n\r\n.line\r\nlast\r\n"
    copies = StagedCopies([box, box])  # the same Maildir twice: one copy
    copies.write(message[:7])
    copies.write(message[7:])
    (key,) = copies.finish()
    copies.publish()
    (listed,) = MaildirMailbox(box).list_messages()
    assert listed.key == key[1] and listed.size == len(message)
    assert b"".join(MaildirMailbox(box).wire_chunks(listed.key)) == message
    aborted = StagedCopies([box])
    aborted.write(b"x\r\n")
    aborted.abort()
    assert list((box / "tmp").iterdir()) == []
