"""The server returns password checks' 16 MiB buffers to the system (serve/memory.py)."""

from __future__ import annotations

import subprocess
import sys

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
