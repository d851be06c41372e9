"""Graceful shutdown and reload: in-process on both backends, and ``nosend serve`` signals."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from nosend.serve import first_run
from nosend_runners.serve.settings import ServerSettings
from nosend_store.config import ConfigError
from tests.runners.conftest import (
    LineClient,
    SyncClient,
    echo_settings,
    fast_timeouts,
    free_port,
    port_of,
    running_server,
    stop_process,
    wait_for_port,
    write_config,
)


@pytest.mark.anyio
async def test_shutdown_lets_a_busy_session_finish_and_closes_idle_ones_with_421() -> None:
    async with running_server(echo_settings("smtp", "pop3")) as server:
        port = port_of(server, "smtp")
        busy, idle = await LineClient.connect(port), await LineClient.connect(port)
        await busy.line(), await idle.line()
        # BUSY stands in for DATA: body + commit. Sent with PEER in one write: once PEER
        # is answered, BUSY is read too and no shutdown can take the session as idle.
        await busy.send(b"PEER\r\nBUSY 0.6\r\n")
        assert (await busy.line()).startswith(b"250 127.0.0.1 ")
        server.shutdown()
        assert await idle.line() == b"421 4.3.2 Server shutting down"
        assert await idle.closed()
        # No new connections once shutting down.
        with pytest.raises(OSError):
            with anyio.fail_after(5):
                late = await LineClient.connect(port)
                await late.line()
                await late.aclose()
        assert await busy.line() == b"250 2.0.0 committed"
        assert await busy.line() == b"421 4.3.2 Server shutting down"
        assert await busy.closed()
        await busy.aclose(), await idle.aclose()


@pytest.mark.anyio
async def test_a_session_still_busy_after_the_grace_period_is_cancelled() -> None:
    settings = echo_settings("smtp", timeouts=fast_timeouts(shutdown_grace=0.3))
    with anyio.fail_after(10):
        async with running_server(settings) as server:
            client = await LineClient.connect(port_of(server, "smtp"))
            await client.line()
            await client.send(b"PEER\r\nBUSY 30\r\n")  # busy once PEER is answered
            assert (await client.line()).startswith(b"250 127.0.0.1 ")
            server.shutdown()
            # Closed without the 250: the client retries; nothing was acknowledged.
            assert await client.line(timeout=5) == b""
            await client.aclose()


@pytest.mark.anyio
async def test_reload_keeps_the_old_config_when_the_new_one_is_bad(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[str] = []
    new = echo_settings("smtp", hostname="renamed.invalid")

    def reloader() -> tuple[object, ServerSettings]:
        attempts.append("reload")
        if len(attempts) == 1:
            raise ConfigError("/etc/nosend/mail.cfg", 12, "unknown key 'smtp_lisen'")
        return "new config", new

    caplog.set_level(logging.INFO)
    settings = echo_settings("smtp")
    async with running_server(settings, config="old config", reloader=reloader) as server:
        assert await server.reload() is False
        assert server.state.config == "old config"
        assert "/etc/nosend/mail.cfg:12: unknown key 'smtp_lisen'" in caplog.text
        assert await server.reload() is True
        assert server.state.config == "new config"
        client = await LineClient.connect(port_of(server, "smtp"))
        assert await client.line() == b"220 renamed.invalid nosend echo smtp ready"
        await client.aclose()


def _serve(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nosend", "serve", "--config", str(config), "--session", "echo",
         *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_finishes_the_message_in_flight_then_exits_0(tmp_path: Path, backend: str) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        f"smtp_listen = 127.0.0.1:{port}",
        "submission_listen =",
        "pop3_listen =",
    )
    proc = _serve(config, "--backend", backend)
    try:
        wait_for_port(port)
        busy = SyncClient.connect(port)
        assert busy.line().startswith(b"220 ")
        busy.sock.sendall(b"PEER\r\nBUSY 0.8\r\n")  # busy once PEER is answered
        assert busy.line().startswith(b"250 127.0.0.1 ")
        idle = SyncClient.connect(port)
        assert idle.line().startswith(b"220 ")
        proc.send_signal(signal.SIGTERM)
        assert idle.line() == b"421 4.3.2 Server shutting down"
        assert busy.line() == b"250 2.0.0 committed"
        assert busy.line() == b"421 4.3.2 Server shutting down"
        assert proc.wait(timeout=10) == 0
        busy.close(), idle.close()
    finally:
        stop_process(proc)
    assert b"graceful shutdown requested" in proc.stderr.read()  # type: ignore[union-attr]


def test_sighup_reloads_mail_cfg_and_keeps_it_when_broken(tmp_path: Path) -> None:
    port = free_port()
    listen = (f"smtp_listen = 127.0.0.1:{port}", "submission_listen =", "pop3_listen =")
    config = write_config(tmp_path, "hostname = before.invalid", *listen)
    proc = _serve(config)
    try:
        wait_for_port(port)
        good = config.read_text()
        config.write_text(good + "no_such_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        # The broken file is reported with file:line and the old config keeps serving.
        stderr_lines = []
        assert proc.stderr is not None
        while not any(b"reload failed" in line for line in stderr_lines):
            stderr_lines.append(proc.stderr.readline())
            assert stderr_lines[-1], f"the server ended: {b''.join(stderr_lines)!r}"
        bad_line = len(good.splitlines()) + 1
        assert f"{config}:{bad_line}:".encode() in stderr_lines[-1]
        client = SyncClient.connect(port)
        assert client.line() == b"220 before.invalid nosend echo smtp ready"
        client.close()
        config.write_text(good.replace("before.invalid", "after.invalid"))
        proc.send_signal(signal.SIGHUP)
        while b"configuration reloaded" not in (line := proc.stderr.readline()):
            assert line, "the server ended"
        client = SyncClient.connect(port)
        assert client.line() == b"220 after.invalid nosend echo smtp ready"
        client.close()
    finally:
        stop_process(proc)
    assert proc.returncode == 0


def test_first_run_creates_a_config_and_prints_the_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "mail.cfg"
    created = first_run(config)
    text = capsys.readouterr().out
    assert created.mailboxes and "server 127.0.0.1, port 2525" in text
    assert "port 2110" in text and "user name: user" in text
    password = text.split("password: ", 1)[1].split()[0]
    assert len(password) >= 12
    assert password not in config.read_text()  # only the hash is stored
    assert created.login_mailbox("user") is not None
    assert created.login_mailbox("user").check_password(password)  # type: ignore[union-attr]
    assert config.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_under_inetd_finishes_the_message_in_flight(tmp_path: Path, backend: str) -> None:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nosend", "inetd", "smtp", "--session", "echo",
         "--backend", backend, "--config", str(tmp_path / "none.cfg")],
        stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
    )  # fmt: skip
    theirs.close()
    ours.settimeout(10)
    client = SyncClient(ours)
    try:
        assert client.line().startswith(b"220 ")  # signal handler is installed by now
        # One write: once PEER is answered the session has read BUSY as well, so the
        # signal finds it busy however late it comes (a sleep here raced the reading).
        ours.sendall(b"PEER\r\nBUSY 0.8\r\n")
        assert client.line().startswith(b"250 ")
        proc.send_signal(signal.SIGTERM)
        assert client.line() == b"250 2.0.0 committed"
        assert client.line() == b"421 4.3.2 Server shutting down"
        assert client.closed()
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
        ours.close()


@pytest.mark.anyio
async def test_run_blocking_lets_a_commit_in_a_thread_finish_when_cancelled() -> None:
    from nosend_runners.session.boundary import PeerInfo, ServerState, SessionContext

    state = ServerState()
    ctx = SessionContext("smtp", state=state, peer=lambda: PeerInfo("192.0.2.1", 25))
    finished: list[str] = []

    def commit() -> None:
        time.sleep(0.3)  # an fsync and rename, say
        finished.append("renamed")

    with anyio.move_on_after(0.05) as scope:
        await ctx.run_blocking(commit)
        # The cancellation lands at the first checkpoint after the thread returned.
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert finished == ["renamed"]  # cancellation waited for the thread
    assert not ctx.shutting_down
    state.shutdown.request()
    assert ctx.shutting_down


def test_a_second_sigterm_during_the_grace_period_stops_at_once(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path, f"smtp_listen = 127.0.0.1:{port}", "submission_listen =", "pop3_listen ="
    )
    proc = _serve(config)
    try:
        wait_for_port(port)
        busy = SyncClient.connect(port)
        assert busy.line().startswith(b"220 ")
        busy.sock.sendall(b"PEER\r\nBUSY 30\r\n")  # busy once PEER is answered
        assert busy.line().startswith(b"250 127.0.0.1 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        while b"shutting down: 1 session(s) open" not in (line := proc.stderr.readline()):
            assert line, "the server ended"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert busy.line() == b""  # cut off: no 250, so nothing was acknowledged
        busy.close()
    finally:
        stop_process(proc)
