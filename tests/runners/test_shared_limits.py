"""The authentication-failure table shared by processes (``nosend inetd``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import anyio
import pytest

from nosend_runners.inetd import run_inetd
from nosend_runners.mail.backend import run_pop3 as pop3_session
from nosend_runners.serve.fdstream import FdByteStream
from nosend_runners.serve.limits import LimitSettings
from nosend_runners.serve.settings import ServerSettings
from nosend_runners.serve.shared_limits import FileAuthFailureTracker, auth_failures_path
from tests.runners.conftest import LineClient, fast_timeouts
from tests.runners.session_support import PASSWORDS, make_config


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_two_processes_see_one_table(tmp_path: Path) -> None:
    # Two trackers on one file stand for two inetd processes, one per connection.
    path = auth_failures_path(tmp_path)
    clock = Clock()
    first = FileAuthFailureTracker(path, max_failures=3, window=60, clock=clock)
    second = FileAuthFailureTracker(path, max_failures=3, window=60, clock=clock)
    for _ in range(2):
        first.record_failure("192.0.2.7")
    assert second.failures("192.0.2.7") == 2 and not second.blocked("192.0.2.7")
    second.record_failure("192.0.2.7")
    assert first.blocked("192.0.2.7") and second.blocked("192.0.2.7")
    assert not first.blocked("192.0.2.8")
    assert first.failure_delay("192.0.2.7") == second.failure_delay("192.0.2.7") > 0
    clock.now += 61  # the window passed: the lockout ends everywhere
    assert not second.blocked("192.0.2.7")
    first.record_failure("198.51.100.1")
    second.record_success("198.51.100.1")
    assert first.failures("198.51.100.1") == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_damaged_table_starts_afresh_and_is_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = auth_failures_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    tracker = FileAuthFailureTracker(path, max_failures=2)
    assert not tracker.blocked("192.0.2.7")
    tracker.record_failure("192.0.2.7")
    assert list(json.loads(path.read_text())) == ["192.0.2.7"]
    assert "damaged" in caplog.text


def test_an_unusable_path_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The state folder's place is taken by a file: the table cannot be made there.
    (tmp_path / "state").write_text("in the way")
    caplog.set_level(logging.ERROR, logger="nosend.server")
    tracker = FileAuthFailureTracker(auth_failures_path(tmp_path), max_failures=2)
    tracker.record_failure("192.0.2.7")
    tracker.record_failure("192.0.2.7")
    assert tracker.blocked("192.0.2.7")  # still counted, in this process
    assert sum("unusable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_inetd_lockout_holds_across_connections(tmp_path: Path) -> None:
    # Under a super-server each connection is a new process with a new ServerState:
    # guesses in earlier connections must still lock the address out.
    config = make_config(tmp_path)
    limits = LimitSettings(auth_max_failures=2, auth_max_delay=0.01)
    settings = ServerSettings(hostname="mx.invalid", timeouts=fast_timeouts(), limits=limits)
    env = {"TCPREMOTEIP": "127.0.0.1", "TCPREMOTEPORT": "5000"}

    async def one_connection(password: str) -> list[bytes]:
        to_server_r, to_server_w = os.pipe()
        from_server_r, from_server_w = os.pipe()
        client = LineClient(FdByteStream(from_server_r, to_server_w))
        replies = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: run_inetd(
                        "pop3",
                        pop3_session,
                        dataclasses.replace(settings),
                        config=config,
                        environ=env,
                        read_fd=to_server_r,
                        write_fd=from_server_w,
                    )
                )
                replies.append(await client.line())
                replies.append(await client.command(b"USER alice"))
                replies.append(await client.command(f"PASS {password}".encode()))
                # Reaching the limit ends the connection; otherwise say goodbye.
                try:
                    await client.command(b"QUIT")
                except (anyio.BrokenResourceError, anyio.EndOfStream):
                    pass
        await client.aclose()
        return replies

    assert (await one_connection("wrong-1"))[2].startswith(b"-ERR")
    assert (await one_connection("wrong-2"))[2].startswith(b"-ERR")
    locked = await one_connection(PASSWORDS["alice"])
    assert locked[2].startswith(b"-ERR [AUTH]"), locked
    assert auth_failures_path(config.server.data_dir).exists()


def test_record_failure_returns_the_shared_count(tmp_path: Path) -> None:
    path = auth_failures_path(tmp_path)
    first = FileAuthFailureTracker(path, max_failures=3)
    second = FileAuthFailureTracker(path, max_failures=3)
    assert first.record_failure("192.0.2.7") == 1
    assert second.record_failure("192.0.2.7") == 2  # counts the other process's failure
