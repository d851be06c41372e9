"""The session lock: exclusive across threads and processes, never stuck after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nosend_store.locks import FileLock, LockBusy


def test_second_holder_in_same_process_is_refused(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "l")
    b = FileLock(tmp_path / "l")
    assert a.acquire()
    assert not b.acquire()
    with pytest.raises(LockBusy):
        with FileLock(tmp_path / "l"):
            pass
    a.release()
    assert b.acquire()
    b.release()


def test_threads_never_hold_the_lock_together(tmp_path: Path) -> None:
    inside = 0
    overlaps = 0
    entries = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, overlaps, entries
        for _ in range(30):
            lock = FileLock(tmp_path / "l")
            if not lock.acquire(timeout=5, poll_interval=0.001):
                continue
            with guard:
                inside += 1
                entries += 1
                overlaps += inside > 1
            time.sleep(0.0005)
            with guard:
                inside -= 1
            lock.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == 0
    assert entries == 240


def test_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "l"
    code = (
        "import sys, time\n"
        "from nosend_store.locks import FileLock\n"
        f"l = FileLock({str(path)!r}); assert l.acquire()\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"locked\n"
        assert not FileLock(path).acquire()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        lock = FileLock(path)
        assert lock.acquire(timeout=5)
        lock.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_timeout_waits_for_release(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "l")
    assert a.acquire()
    threading.Timer(0.1, a.release).start()
    b = FileLock(tmp_path / "l")
    assert b.acquire(timeout=5, poll_interval=0.01)
    b.release()


def test_not_reentrant(tmp_path: Path) -> None:
    a = FileLock(tmp_path / "l")
    assert a.acquire()
    with pytest.raises(RuntimeError):
        a.acquire()
    a.release()
    a.release()  # idempotent
    assert not a.held
