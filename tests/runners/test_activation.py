"""systemd socket activation: ``nosend serve`` on inherited listeners (Accept=no) and
``nosend inetd`` on an inherited connection as fd 3 (Accept=yes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nosend_runners.serve.activation import listen_fds
from tests.runners.conftest import SyncClient, stop_process, write_config

# What systemd does: the sockets are fds 3.. and LISTEN_PID is the pid of the process
# that must use them, which is only known after fork; so set it in the child, then exec.
_WRAPPER = """
import os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
for index, fd in enumerate(fds):
    os.dup2(fd, 3 + index)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable, "-m", "nosend", *sys.argv[2:]])
"""


def _activated(
    fds: list[int], args: list[str], names: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    return subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, ",".join(map(str, fds)), *args],
        pass_fds=fds,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serve_uses_the_named_inherited_sockets_instead_of_mail_cfg(
    tmp_path: Path, backend: str
) -> None:
    config = write_config(tmp_path)  # its own ports (2525...) must not be bound
    smtp, pop3 = _listener(), _listener()
    proc = _activated(
        [smtp.fileno(), pop3.fileno()],
        ["serve", "--config", str(config), "--session", "echo", "--backend", backend],
        names="smtp:pop3",
    )
    try:
        # The kernel queues connections on the inherited sockets before the server runs.
        for sock, service in ((smtp, "smtp"), (pop3, "pop3")):
            client = SyncClient.connect(sock.getsockname()[1])
            assert client.line() == f"220 localhost nosend echo {service} ready".encode()
            assert client.command(b"QUIT") == b"221 bye"
            client.close()
    finally:
        stop_process(proc)
        smtp.close(), pop3.close()
    assert proc.returncode == 0
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert b"listening smtp=127.0.0.1:" in stderr and b":2525" not in stderr


def test_inetd_serves_the_connection_passed_as_fd_3(tmp_path: Path) -> None:
    listener = _listener()
    client = socket.create_connection(listener.getsockname(), timeout=10)
    conn, _ = listener.accept()
    proc = _activated(
        [conn.fileno()],
        ["inetd", "pop3", "--session", "echo", "--config", str(tmp_path / "none.cfg")],
    )
    conn.close()
    try:
        line_client = SyncClient(client)
        assert line_client.line() == b"220 localhost nosend echo pop3 ready"
        assert line_client.command(b"PEER").startswith(b"250 127.0.0.1 ")
        assert line_client.command(b"QUIT") == b"221 bye"
        assert line_client.closed()
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
        client.close(), listener.close()


def test_listen_fds_ignores_variables_meant_for_another_process() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"}
    assert listen_fds(env) == []
    assert env == {}  # unset, as sd_listen_fds(3) does, so children do not see them
    assert listen_fds({}) == []


def test_listen_fds_names_sockets_by_name_or_port() -> None:
    # Put two listeners on fds 3 and 4 of this process, as systemd would.
    a, b = _listener(), _listener()
    saved = [os.dup(3) if _fd_open(3) else None, os.dup(4) if _fd_open(4) else None]
    try:
        os.dup2(a.fileno(), 3)
        os.dup2(b.fileno(), 4)
        port_b = b.getsockname()[1]
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "pop3s"}
        found = listen_fds(env, ports={port_b: "submission"})
        assert [(s.name, s.service, s.listening) for s in found] == [
            ("pop3s", "pop3s", True),
            ("unknown", "submission", True),
        ]
        for inherited in found:
            inherited.sock.detach()
    finally:
        for fd, old in zip((3, 4), saved, strict=True):
            if old is None:
                os.close(fd)
            else:
                os.dup2(old, fd, inheritable=False)
                os.close(old)
        a.close(), b.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
