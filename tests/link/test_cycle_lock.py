"""The overlap lock (second cycle refused, with the holder's pid; a killed holder
leaves no stale lock) and the durable link-up marker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nosend_link.cycle_lock import (
    CycleBusy,
    CycleLock,
    LinkUp,
    MarkerError,
    UpMarker,
    state_dir,
)

_HOLD = """
import sys, time
from nosend_link.cycle_lock import CycleLock
lock = CycleLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(3600)
"""


def test_state_dir_is_made_owner_only(tmp_path: Path) -> None:
    state = state_dir(tmp_path / "data")
    assert state == tmp_path / "data" / "state" and state.is_dir()
    assert state.stat().st_mode & 0o777 == 0o700


def test_a_second_cycle_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = CycleLock(tmp_path)
    with first:
        with pytest.raises(CycleBusy) as caught:
            CycleLock(tmp_path).acquire()
        assert caught.value.pid == os.getpid()
        assert str(caught.value) == f"another cycle is running (pid {os.getpid()})"
    with CycleLock(tmp_path):  # released: the next one gets it
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(CycleBusy) as caught:
            CycleLock(tmp_path).acquire()
        assert caught.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    with CycleLock(tmp_path) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_the_marker_records_links_until_each_is_brought_down(tmp_path: Path) -> None:
    marker = UpMarker(tmp_path)
    assert marker.read() == ()
    iridium = LinkUp("iridium", ("poff", "iridium"), 1_800_000_000.5, 4242)
    gsm = LinkUp("gsm", ("nmcli", "connection", "down", "gsm"), 1_800_000_100.0, 4243)
    marker.add(iridium)
    marker.add(gsm)
    assert UpMarker(tmp_path).read() == (iridium, gsm)
    marker.remove("iridium")
    assert marker.read() == (gsm,)
    marker.remove("gsm")
    assert not marker.path.exists() and marker.read() == ()
    assert not (tmp_path / "link-up.json.tmp").exists()


def test_an_unreadable_marker_is_reported_and_can_be_cleared(tmp_path: Path) -> None:
    marker = UpMarker(tmp_path)
    marker.path.write_text("{not json")
    with pytest.raises(MarkerError):
        marker.read()
    marker.clear()
    assert marker.read() == ()


def test_root_writes_the_marker_as_the_owner_of_state_so_the_server_can_clear_it() -> None:
    # A root `nosend check` killed with -9 never hands state/ back to the service user.
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root (CI runs the tests as root)")
        pytest.skip("needs root: writes as root into a folder another user owns")
    nobody = 65534
    place = Path(tempfile.mkdtemp(prefix="nosend-marker-", dir="/tmp"))
    try:
        os.chmod(place, 0o755)
        state = place / "state"
        state.mkdir(mode=0o700)
        os.chown(state, nobody, nobody)
        UpMarker(state).add(LinkUp("iridium", ("poff",), 1_800_000_000.0, 4242))
        assert (state / "link-up.json").stat().st_uid == nobody
        pid = os.fork()
        if pid == 0:  # the child, as the service user would run: read it and clear it
            code = 1
            try:
                os.setgid(nobody)
                os.setuid(nobody)
                marker = UpMarker(state)
                if [e.link for e in marker.read()] == ["iridium"]:
                    marker.remove("iridium")
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not (state / "link-up.json").exists()
    finally:
        shutil.rmtree(place, ignore_errors=True)
