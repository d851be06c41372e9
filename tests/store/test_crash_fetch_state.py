"""Crash safety of the fetched-UIDL record: a child process SIGKILLs itself at each write
boundary of a record, a prune and the rewrite on open. Afterwards no UIDL whose record
was acknowledged is missing, nothing half-written is shown, and the file takes new
records (DESIGN invariant 3: the UIDL is durable before the deletion is asked for)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nosend_store.fetch_state import FetchRecord, FetchState, FetchStatus

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from nosend_store.fetch_state import FetchState

    data_dir, phase, kill_at = sys.argv[1], sys.argv[2], sys.argv[3]
    armed = False

    def die(step):
        if armed and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if phase == "create":
        armed = True
    state = FetchState.open(data_dir, "isp", crash_hook=die)
    if phase in ("create", "record"):
        for i in range(6):
            armed = phase == "record" and i == 3
            state.record(f"uidl-{i}")
            # The fetch code would now ask the server to delete it.
            print("ACK", f"uidl-{i}", flush=True)
    elif phase == "forget":
        for i in range(10):
            state.record(f"uidl-{i}")
        print("READY", flush=True)
        armed = True
        state.forget_missing([f"uidl-{i}" for i in range(5)])
        print("DONE", flush=True)
    elif phase == "reopen":
        # The file holds superseded records and a torn line: opening rewrites it.
        state.hold("big", 9000)
        state.request_fetch("big")
        state.record("big")
        state.record("small")
        state.close()
        with open(state.path, "ab") as f:
            f.write(b"D half-a-reco")
        print("READY", flush=True)
        armed = True
        FetchState.open(data_dir, "isp", crash_hook=die).close()
        print("DONE", flush=True)
    """
)


def run_child(data_dir: Path, phase: str, kill_at: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), phase, kill_at],
        capture_output=True,
        timeout=60,
    )
    # Killed by our own SIGKILL, not by an exception.
    assert done.returncode == -9, done.stderr.decode()
    return done.stdout.decode().split("\n")


def reopened(data_dir: Path) -> dict[str, FetchRecord]:
    with FetchState.open(data_dir, "isp") as state:
        records = dict(state.records())
        # Whatever was on disk, the file now holds exactly one whole line per record.
        assert len(state.path.read_bytes().splitlines()) == len(records)
        assert state.path.read_bytes().endswith(b"\n") or not records
        state.record("after-the-crash")
    with FetchState.open(data_dir, "isp") as state:
        assert state.status("after-the-crash") is FetchStatus.DELIVERED
        assert {u: r for u, r in state.records().items() if u != "after-the-crash"} == records
    assert list((data_dir / "fetch").glob("*.tmp")) == []
    return records


@pytest.mark.parametrize(
    ("kill_at", "fourth_visible"),
    [
        ("before_write", False),
        # Written, not fsynced: a process crash keeps the page cache, so the record can
        # be there; no ACK was given, so either way nothing is deleted on the server.
        ("before_fsync", True),
        ("after_fsync", True),
    ],
)
def test_kill_while_recording_loses_no_acknowledged_uidl(
    tmp_path: Path, kill_at: str, fourth_visible: bool
) -> None:
    out = run_child(tmp_path, "record", kill_at)
    acked = [line.split()[1] for line in out if line.startswith("ACK ")]
    assert acked == ["uidl-0", "uidl-1", "uidl-2"]
    records = reopened(tmp_path)
    expected = acked + (["uidl-3"] if fourth_visible else [])
    assert list(records) == expected
    assert all(r == FetchRecord(FetchStatus.DELIVERED) for r in records.values())


def test_kill_before_a_new_file_is_made_durable(tmp_path: Path) -> None:
    out = run_child(tmp_path, "create", "before_create_dir_fsync")
    assert not any(line.startswith("ACK") for line in out)
    assert reopened(tmp_path) == {}


@pytest.mark.parametrize("kill_at", ["before_fsync", "before_rename", "before_dir_fsync"])
def test_kill_while_pruning_shows_the_old_set_or_the_new(tmp_path: Path, kill_at: str) -> None:
    out = run_child(tmp_path, "forget", kill_at)
    assert "READY" in out and "DONE" not in out
    records = reopened(tmp_path)
    everything = [f"uidl-{i}" for i in range(10)]
    if kill_at == "before_dir_fsync":
        # Renamed already: a process crash shows the new file (a power cut could show
        # either; both are whole).
        assert list(records) == everything[:5]
    else:
        assert list(records) == everything


@pytest.mark.parametrize("kill_at", ["before_fsync", "before_rename", "before_dir_fsync"])
def test_kill_while_opening_rewrites_keeps_every_record(tmp_path: Path, kill_at: str) -> None:
    out = run_child(tmp_path, "reopen", kill_at)
    assert "READY" in out and "DONE" not in out
    records = reopened(tmp_path)
    assert records == {
        "big": FetchRecord(FetchStatus.DELIVERED, 9000),
        "small": FetchRecord(FetchStatus.DELIVERED),
    }
