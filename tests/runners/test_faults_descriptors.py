"""File descriptors exhausted (EMFILE) in a running ``nosend serve``: connections beyond
what it can open wait or are refused, a message in flight is either acknowledged and
stored or refused with a temporary reply (never acknowledged and lost), and the server
accepts and delivers again once descriptors are free.

The server is a child process whose ``RLIMIT_NOFILE`` a small wrapper lowers before
running ``nosend serve``; the test opens many connections to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosend_store.config import Config, load_config
from tests.runners.conftest import SyncClient, free_port, stop_process, wait_for_port
from tests.runners.session_support import PASSWORDS, config_text, messages

#: Descriptors the server may have: its idle needs (about ten) and a few sessions.
LIMIT = 40
#: Connections the test opens at once: far more than the server can hold.
FLOOD = 3 * LIMIT

WRAPPER = """\
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
sys.argv = ["nosend", *sys.argv[1:]]
runpy.run_module("nosend", run_name="__main__", alter_sys=True)
"""

BODY = b"Subject: descriptors\r\n\r\nstill here\r\n.\r\n"


@pytest.fixture(params=["asyncio", "trio"])
def starved(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Config, dict, Path, int]]:
    """``nosend serve`` limited to LIMIT descriptors; yields (config, ports, log, pid)."""
    ports = {"smtp": free_port(), "pop3": free_port()}
    path = tmp_path / "mail.cfg"
    lines = ("max_connections = 1000", "max_connections_per_ip = 1000")
    path.write_text(config_text(tmp_path / "data", *lines, ports=ports))
    path.chmod(0o600)
    wrapper = tmp_path / "limited.py"
    wrapper.write_text(WRAPPER.format(limit=LIMIT))
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), "serve", "--config", str(path)]
        + ["--backend", str(request.param)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for port in ports.values():
            wait_for_port(port)
        yield load_config(path), ports, log_path, proc.pid
        assert proc.poll() is None, log_path.read_text()  # it never died of it
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, log_path.read_text()


def smtp_start(port: int, rcpt: str = "alice@example.test") -> SyncClient:
    client = SyncClient.connect(port)
    assert client.line().startswith(b"220")
    assert client.command(b"HELO client.example").startswith(b"250")
    assert client.command(b"MAIL FROM:<s@remote.example>").startswith(b"250")
    assert client.command(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")
    assert client.command(b"DATA").startswith(b"354")
    return client


def smtp_send(port: int) -> bytes:
    client = smtp_start(port)
    client.sock.sendall(BODY)
    reply = client.line()
    client.command(b"QUIT")
    client.close()
    return reply


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until_starved(pid: int) -> None:
    """Return once the server holds (nearly) all its descriptors; fail after a while."""
    deadline = time.monotonic() + 30
    while open_descriptors(pid) < LIMIT - 2:
        assert time.monotonic() < deadline, f"server holds {open_descriptors(pid)} fds"
        time.sleep(0.05)


def test_descriptors_exhausted(starved: tuple[Config, dict, Path, int]) -> None:
    config, ports, log_path, pid = starved
    assert smtp_send(ports["smtp"]).startswith(b"250")  # acknowledged before the flood
    in_flight = smtp_start(ports["smtp"])  # a message half sent when the flood comes

    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            # The kernel completes the handshake into the listen backlog even when the
            # server cannot accept; once the backlog is full a connect times out.
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", ports["smtp"]))
            except OSError:
                sock.close()
                break
            flood.append(sock)
        wait_until_starved(pid)
        # The message in flight ends now, with the server out of descriptors: it may
        # need one for its file, so either it is stored and acknowledged, or refused
        # with a temporary reply and not stored.
        in_flight.sock.settimeout(30)
        in_flight.sock.sendall(BODY)
        reply = in_flight.line()
        assert reply[:3] in (b"250", b"451", b"452"), reply
        in_flight.close()
    finally:
        for sock in flood:
            sock.close()

    text = log_path.read_text()
    assert "accept on smtp failed, retrying: [Errno 24] Too many open files" in text, text

    # Descriptors free again: the server accepts and delivers without a restart.
    assert smtp_send(ports["smtp"]).startswith(b"250")
    stored = 2 + (reply[:3] == b"250")
    assert len(messages(config, "alice")) == stored
    pop = SyncClient.connect(ports["pop3"])
    assert pop.line().startswith(b"+OK")
    assert pop.command(b"USER alice").startswith(b"+OK")
    assert pop.command(f"PASS {PASSWORDS['alice']}".encode()).startswith(
        f"+OK maildrop has {stored} messages".encode()
    )
    assert pop.command(b"QUIT").startswith(b"+OK")
    pop.close()
    assert "accepting on smtp again" in log_path.read_text()
