"""The server returns password checks' 16 MiB buffers to the system (serve/memory.py)."""

from __future__ import annotations

import contextlib
import poplib
import subprocess
import sys
import threading
from pathlib import Path

from tests.runners.conftest import free_port, stop_process, wait_for_port, write_config

CHILD = """
import hashlib, sys, threading
from nosend_runners.serve import memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "set":
    assert memory.return_large_buffers()
base = rss_mib()

def logins():
    for _ in range(3):  # the default scrypt cost of nosend's password hashes
        hashlib.scrypt(b"pw", salt=b"salt", n=2**14, r=8, p=1, maxmem=64 << 20)

threads = [threading.Thread(target=logins) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(rss_mib() - base)
"""


def _growth(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                          text=True, timeout=120, check=True)
    return int(done.stdout.strip())


def test_password_checks_leave_no_resident_buffers_behind() -> None:
    # Without the setting glibc keeps at least one 16 MiB buffer per hashing thread.
    assert _growth("default") >= 16
    assert _growth("set") < 8


def _rss_mib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_nosend_serve_sets_it_so_parallel_logins_leave_nothing_behind(tmp_path: Path) -> None:
    # Four POP3 logins at once run four scrypt checks in four threads: before the server
    # set the threshold, its resident size stayed 64 MiB higher after them.
    ports = {"smtp": free_port(), "submission": free_port(), "pop3": free_port()}
    config = write_config(tmp_path, *(f"{name}_listen = 127.0.0.1:{port}"
                                      for name, port in ports.items()))
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "nosend", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(ports["pop3"])

        def login() -> None:
            client = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
            client.user("user")
            with contextlib.suppress(poplib.error_proto):  # [IN-USE]: the check ran
                client.pass_("test-password-1")
            client.quit()

        def burst() -> None:
            threads = [threading.Thread(target=login) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        burst()  # threads, arenas and imports of the first logins
        before = _rss_mib(proc.pid)
        for _ in range(3):
            burst()
        assert _rss_mib(proc.pid) - before < 8
    finally:
        stop_process(proc)
        log.close()
