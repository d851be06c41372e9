"""Running a link's ``up`` and ``down`` commands.

Owns: :func:`run_command`, which runs an argv (never through a shell) in a process
group of its own, waits for it with a timeout and, on timeout or cancellation, kills
the whole group (SIGTERM, then SIGKILL after a grace period): ``pon`` or a dialler
script leaves children behind (chat, pppd before it detaches) that must not keep
dialling once we gave up. Its output (standard output and error together) is kept for
the log: the last :data:`OUTPUT_LIMIT` bytes.

Why the output goes to a temporary file, not a pipe: an ``up`` command often starts a
daemon (pppd, a VPN) that inherits its output. Reading a pipe to its end would then
wait for the daemon to exit; we wait for the command's own exit and read the file.

Must not: use a shell, pass anything on standard input, log or return the
environment (the commands inherit ours: ``pon`` and ``nmcli`` need ``PATH``), or kill
the group after a normal exit (that would hang up the link the command just brought up).
Commands come from ``mail.cfg`` and should carry no secret; their output is logged as is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import anyio
import anyio.abc

__all__ = ["KILL_GRACE", "OUTPUT_LIMIT", "CommandResult", "run_command"]

#: How long a timed-out group has between SIGTERM and SIGKILL (pppd hangs up on SIGTERM).
KILL_GRACE = 5.0
#: How much of a command's output is kept for the log.
OUTPUT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How one command ended.

    ``returncode`` is None when the command could not be started (``error`` says why) or
    was killed after ``timeout`` (``timed_out``). ``output`` is the tail of what it wrote.
    """

    program: str
    returncode: int | None
    seconds: float
    output: str = ""
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The command ran and exited with status 0."""
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for a log or a cycle record: the program and how it ended."""
        if self.error is not None:
            return f"{self.program}: {self.error}"
        if self.timed_out:
            return f"{self.program}: no exit within its timeout, killed"
        if self.returncode is not None and self.returncode < 0:
            return f"{self.program}: killed by signal {-self.returncode}"
        return f"{self.program}: exit status {self.returncode}"


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    grace: float = KILL_GRACE,
    monotonic: Callable[[], float] = time.monotonic,
) -> CommandResult:
    """Run ``argv`` in its own process group; kill the group after ``timeout`` seconds.

    If the calling task is cancelled, the group is killed (in a shielded scope, so the
    kill completes) and the cancellation goes on.
    """
    if not argv:
        raise ValueError("empty command")
    program = argv[0]
    start = monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            process = await anyio.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(program, None, monotonic() - start, error="not found")
        except PermissionError:
            return CommandResult(program, None, monotonic() - start, error="permission denied")
        except OSError as exc:
            return CommandResult(program, None, monotonic() - start, error=str(exc.strerror))
        timed_out = False
        try:
            with anyio.move_on_after(timeout):
                await process.wait()
            if process.returncode is None:
                timed_out = True
                await _kill_group(process, grace)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _kill_group(process, grace)
            raise
        output = _tail(out)
    return CommandResult(
        program,
        None if timed_out else process.returncode,
        monotonic() - start,
        output=output,
        timed_out=timed_out,
    )


async def _kill_group(process: anyio.abc.Process, grace: float) -> None:
    # The group id is the leader's pid (start_new_session made it a session leader).
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await process.wait()
    # Whatever is left of the group (the leader, or children that ignored SIGTERM) goes.
    _signal_group(pgid, signal.SIGKILL)
    await process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _tail(out: IO[bytes]) -> str:
    out.flush()
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - OUTPUT_LIMIT))
    return out.read(OUTPUT_LIMIT).decode("utf-8", "replace").strip()
