"""Small programs that stand in for a link's ``up`` and ``down`` commands in tests.

Each helper returns an argv (the running Python with ``-c``), so no shell and no file
outside the test's temporary directory is involved. ``banner_up`` starts a tiny TCP
server on 127.0.0.1 that greets every connection with a banner line -- the "link" whose
probe answers -- and ``banner_down`` stops it, like ``pon``/``poff``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.ports import free_port as free_port  # the link tests take it from here

PY = sys.executable

_BANNER_SERVER = r"""
import os, socket, sys
port, pidfile = int(sys.argv[1]), sys.argv[2]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
while True:
    conn, _ = server.accept()
    try:
        conn.sendall(b"220 test.invalid ESMTP ready\r\n")
    finally:
        conn.close()
"""


def python(code: str, *args: str | os.PathLike[str]) -> tuple[str, ...]:
    """argv that runs ``code`` with ``args`` in ``sys.argv[1:]``."""
    return (PY, "-c", code, *(os.fspath(a) for a in args))


def touch(path: Path, status: int = 0) -> tuple[str, ...]:
    """argv that appends a line to ``path`` and exits with ``status``."""
    code = ("import sys; open(sys.argv[1], 'a').write('ran\\n'); "
            f"print('dialling'); sys.exit({status})")
    return python(code, path)


def hang(pidfile: Path) -> tuple[str, ...]:
    """argv that starts a child (its pid written to ``pidfile``) and then waits forever."""
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(child.pid))\n"
        "import os; os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "time.sleep(3600)\n"
    )
    return python(code, pidfile)


def daemon(pidfile: Path) -> tuple[str, ...]:
    """argv that leaves a background child holding its output open, then exits 0."""
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "print('up')\n"
    )
    return python(code, pidfile)


def banner_up(port: int, pidfile: Path, log: Path) -> tuple[str, ...]:
    """argv that starts the banner server on ``port`` in the background and exits 0
    once it listens (like ``pon``, which returns while pppd stays up)."""
    code = (
        "import os, subprocess, sys, time\n"
        "port, pidfile, log = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "open(log, 'a').write('up\\n')\n"
        f"subprocess.Popen([sys.executable, '-c', {_BANNER_SERVER!r}, port, pidfile],\n"
        "                 start_new_session=True)\n"
        "while not os.path.exists(pidfile):\n"
        "    time.sleep(0.02)\n"
    )
    return python(code, str(port), pidfile, log)


def banner_down(pidfile: Path, log: Path, until: Path | None = None) -> tuple[str, ...]:
    """argv that stops the banner server (if running) and notes that down ran; with
    ``until``, only once that file exists (a hang-up that lasts until the test says so,
    at most a minute)."""
    code = (
        "import os, signal, sys, time\n"
        f"until, deadline = {str(until) if until else None!r}, time.monotonic() + 60\n"
        "while until and not os.path.exists(until) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "pidfile, log = sys.argv[1], sys.argv[2]\n"
        "open(log, 'a').write('down\\n')\n"
        "if os.path.exists(pidfile):\n"
        "    os.kill(int(open(pidfile).read()), signal.SIGTERM)\n"
        "    os.unlink(pidfile)\n"
    )
    return python(code, pidfile, log)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, patience: float = 10.0) -> bool:
    """Whether ``pid`` is dead, allowing the kernel ``patience`` seconds to finish it."""
    deadline = time.monotonic() + patience
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_pid(path: Path, patience: float = 10.0) -> int:
    """The pid a helper wrote to ``path`` (waiting for the file to appear)."""
    deadline = time.monotonic() + patience
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)
    return int(path.read_text())
