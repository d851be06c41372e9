"""``nosend inetd``: one session on stdin/stdout, over pipes, socat and openbsd-inetd.

xinetd is not tested here: its Debian package conflicts with openbsd-inetd (both provide
inet-superserver), and CI installs openbsd-inetd.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from nosend_runners.inetd import peer_from_environment, run_inetd
from nosend_runners.serve.fdstream import FdByteStream
from nosend_runners.serve.settings import ServerSettings
from nosend_runners.session.boundary import PeerInfo
from nosend_runners.testing.echo import echo_session_factory
from tests.conftest import require_tool
from tests.runners.conftest import (
    CertFiles,
    LineClient,
    SyncClient,
    fast_timeouts,
    free_port,
    stop_process,
    wait_for_port,
    write_config,
)

NOSEND = [sys.executable, "-m", "nosend"]


def test_peer_comes_from_the_super_servers_environment() -> None:
    assert peer_from_environment({"TCPREMOTEIP": "10.0.0.7", "TCPREMOTEPORT": "4100"}) == (
        PeerInfo("10.0.0.7", 4100)
    )
    assert peer_from_environment({"SOCAT_PEERADDR": "192.0.2.1", "SOCAT_PEERPORT": "x"}) == (
        PeerInfo("192.0.2.1", None)
    )
    assert peer_from_environment({"REMOTE_HOST": "198.51.100.9"}).address == "198.51.100.9"
    assert peer_from_environment({}) == PeerInfo("unknown")


@pytest.mark.anyio
async def test_session_over_a_pair_of_pipes_with_starttls(tls_cert: CertFiles) -> None:
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    settings = ServerSettings(
        hostname="pipe.invalid",
        tls_cert=tls_cert.cert,
        tls_key=tls_cert.key,
        timeouts=fast_timeouts(),
    )
    env = {"TCPREMOTEIP": "10.1.2.3", "TCPREMOTEPORT": "1234"}
    client = LineClient(FdByteStream(from_server_r, to_server_w))
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_inetd(
                "smtp",
                echo_session_factory("smtp"),
                settings,
                environ=env,
                read_fd=to_server_r,
                write_fd=from_server_w,
            )
        )
        assert await client.line() == b"220 pipe.invalid nosend echo smtp ready"
        assert await client.command(b"PEER") == b"250 10.1.2.3 1234 tls=False None"
        # Pipelined after STARTTLS: must be discarded, never fed to the TLS handshake.
        await client.send(b"STARTTLS\r\nINJECTED\r\n")
        assert await client.line() == b"220 2.0.0 Ready to start TLS"
        await client.start_tls(tls_cert.client_context())
        assert (await client.command(b"PEER")).startswith(b"250 10.1.2.3 1234 tls=True TLSv1.")
        assert await client.command(b"QUIT") == b"221 bye"
        assert await client.closed()
    await client.aclose()


@pytest.mark.anyio
async def test_pipe_session_ends_at_the_idle_timeout() -> None:
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    settings = ServerSettings(timeouts=fast_timeouts(command=0.3))
    client = LineClient(FdByteStream(from_server_r, to_server_w))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: run_inetd(
                    "pop3",
                    echo_session_factory("pop3"),
                    settings,
                    environ={},
                    read_fd=to_server_r,
                    write_fd=from_server_w,
                )
            )
            assert (await client.line()).startswith(b"220 ")
            assert await client.line() == b"421 4.4.2 Idle timeout, closing"
            assert await client.closed()
    await client.aclose()


def _socat(port: int, command: list[str], options: str = "") -> subprocess.Popen[bytes]:
    socat = require_tool("socat")
    exec_arg = "EXEC:" + " ".join(command) + options
    return subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", exec_arg],
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("options", ["", ",pipes"], ids=["socketpair", "pipes"])
def test_under_socat_with_starttls(tmp_path: Path, tls_cert: CertFiles, options: str) -> None:
    config = write_config(tmp_path, "hostname = socat.invalid", cert=tls_cert)
    port = free_port()
    command = [*NOSEND, "inetd", "smtp", "--session", "echo", "--config", str(config)]
    proc = _socat(port, command, options)
    try:
        wait_for_port(port)
        client = SyncClient.connect(port)
        assert client.line() == b"220 socat.invalid nosend echo smtp ready"
        # socat tells us the TCP peer in SOCAT_PEERADDR/PORT; the stdio is a local pair.
        assert client.command(b"PEER").startswith(b"250 127.0.0.1 ")
        assert client.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS"
        client.start_tls(tls_cert.client_context())
        assert b"tls=True" in client.command(b"PEER")
        assert client.command(b"QUIT") == b"221 bye"
        client.close()
    finally:
        stop_process(proc)


def test_under_socat_without_configuration_refuses_with_421(tmp_path: Path) -> None:
    port = free_port()
    missing = tmp_path / "missing.cfg"
    proc = _socat(port, [*NOSEND, "inetd", "smtp", "--config", str(missing)])
    try:
        wait_for_port(port)
        client = SyncClient.connect(port)
        assert client.line() == b"421 4.3.0 Service not available, try again later"
        assert client.closed()
        client.close()
    finally:
        stop_process(proc)


def _check_echo_session(port: int, service: str) -> None:
    client = SyncClient.connect(port)
    assert client.line() == f"220 localhost nosend echo {service} ready".encode()
    peer = client.command(b"PEER")
    assert peer.startswith(b"250 127.0.0.1 "), peer
    assert client.command(b"hello inetd") == b"250 hello inetd"
    assert client.command(b"QUIT") == b"221 bye"
    assert client.closed()
    client.close()


def test_under_openbsd_inetd(tmp_path: Path) -> None:
    inetd = require_tool("inetd")
    port = free_port()
    conf = tmp_path / "inetd.conf"
    # argv[0] is the full path too: openbsd-inetd clears PATH, and a bare "python3" makes
    # Python look for itself elsewhere and miss a virtual environment's packages.
    args = " ".join([sys.executable, "-m", "nosend", "inetd", "pop3", "--session", "echo"])
    args += f" --config {tmp_path / 'none.cfg'} --log-file {tmp_path / 'session.log'}"
    conf.write_text(
        f"127.0.0.1:{port} stream tcp nowait {getpass.getuser()} {sys.executable} {args}\n"
    )
    # -d: debug mode, stays in the foreground; logs go to our stderr, not the socket.
    proc = subprocess.Popen([inetd, "-d", str(conf)], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        _check_echo_session(port, "pop3")
        _check_echo_session(port, "pop3")  # nowait: a new process per connection
    finally:
        stop_process(proc)
    # inetd puts the socket on fd 2 as well: the log went to the file, not to the client
    # (the exact replies above prove the latter).
    # Each session's process logs its disconnect line after closing the connection, so
    # the client can see the close first: wait for two such lines (the checked sessions,
    # or wait_for_port's own connection, whichever processes got there first).
    session_log = tmp_path / "session.log"
    deadline = time.monotonic() + 30
    while (log := session_log.read_text() if session_log.exists() else "").count(
        "event=disconnect"
    ) < 2:
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert "service=pop3" in log and "peer=127.0.0.1:" in log


def test_a_transcript_file_on_stdin_and_a_pipe_on_stdout(tmp_path: Path) -> None:
    transcript = tmp_path / "in.txt"
    transcript.write_bytes(b"hello\r\nPEER\r\nQUIT\r\n")
    with transcript.open("rb") as stdin:
        result = subprocess.run(
            [*NOSEND, "inetd", "smtp", "--session", "echo", "--config", str(tmp_path / "x")],
            stdin=stdin,
            capture_output=True,
            timeout=20,
            env={**os.environ, "TCPREMOTEIP": "203.0.113.5"},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(b"\r\n") == [
        b"220 localhost nosend echo smtp ready",
        b"250 hello",
        b"250 203.0.113.5 None tls=False None",
        b"221 bye",
        b"",
    ]
    assert b"event=disconnect" in result.stderr  # stderr is not the connection here: log there
