"""up/down commands: exit status, output for the log, and the process group killed on
timeout or cancellation (never after a normal exit)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from nosend_link.commands import OUTPUT_LIMIT, run_command
from tests.link.link_scripts import PY, alive, daemon, gone, hang, python, read_pid, touch

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_success_and_failure_with_output_kept(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    ok = await run_command(touch(mark), timeout=30)
    assert ok.ok and ok.returncode == 0 and ok.output == "dialling"
    assert mark.read_text() == "ran\n"
    failed = await run_command(touch(mark, status=3), timeout=30)
    assert not failed.ok and failed.returncode == 3
    assert failed.describe() == f"{PY}: exit status 3"


async def test_a_missing_program_is_reported_not_raised() -> None:
    result = await run_command(["/nonexistent/pon", "iridium"], timeout=5)
    assert not result.ok and result.returncode is None
    assert result.describe() == "/nonexistent/pon: not found"


async def test_only_the_tail_of_a_long_output_is_kept() -> None:
    code = "import sys; sys.stdout.write('x' * 100000 + 'END'); sys.stderr.write('err')"
    result = await run_command(python(code), timeout=30)
    assert len(result.output) == OUTPUT_LIMIT and result.output.endswith("ENDerr")


async def test_no_environment_is_echoed_in_the_result(tmp_path: Path) -> None:
    os.environ["NOSEND_TEST_SECRET"] = "hunter2"
    try:
        result = await run_command(python("import sys; sys.exit(1)"), timeout=30)
    finally:
        del os.environ["NOSEND_TEST_SECRET"]
    assert "hunter2" not in repr(result) and "hunter2" not in result.describe()


async def test_a_hung_command_and_its_children_are_killed_at_the_timeout(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    # The timeout leaves a loaded machine time to start the child it must then kill.
    result = await run_command(hang(pidfile), timeout=5.0, grace=1.0)
    assert result.timed_out and result.returncode is None and not result.ok
    assert "killed" in result.describe()
    assert gone(read_pid(pidfile))


async def test_a_daemon_left_behind_by_a_command_that_exited_keeps_running(
    tmp_path: Path,
) -> None:
    # Like pon starting pppd: the command exits, its child keeps the output file open.
    pidfile = tmp_path / "daemon.pid"
    result = await run_command(daemon(pidfile), timeout=60)
    child = read_pid(pidfile)
    try:
        assert result.ok and not result.timed_out and result.output == "up"
        assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


async def test_cancellation_kills_the_group_and_goes_on(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    finished = []

    async def dial() -> None:
        await run_command(hang(pidfile), timeout=3600, grace=1.0)
        finished.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(dial)
        while not pidfile.exists():
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert finished == []
    assert gone(read_pid(pidfile))
