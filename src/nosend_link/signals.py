"""SIGTERM, SIGINT (Ctrl-C) and SIGHUP during a cycle become cancellation, so that
``down`` runs and the cycle is recorded before the process ends.

Owns: :func:`run_until_signalled`, for ``nosend send`` and the scheduler's loop: it
runs an async function and cancels it at the first of those signals. The signal
handlers stay installed until the function has finished unwinding, so a second Ctrl-C
or a service manager's repeated SIGTERM cannot kill the process half way through
hanging up (a call left open costs money by the minute); they are only noted. SIGKILL
cannot be caught: for that, the link-up marker (:mod:`nosend_link.cycle_lock`) lets the
next cycle hang up.

Must not: exit the process or pick exit codes beyond :attr:`Signalled.exit_code`
(128 + the signal number, the shell's convention); the command line decides.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.abc

__all__ = ["DEFAULT_SIGNALS", "Signalled", "run_until_signalled"]

T = TypeVar("T")

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Signalled(Generic[T]):
    """The function's ``value`` if it finished, else None; ``signals`` received, first
    first (empty if none came)."""

    value: T | None
    signals: tuple[int, ...] = ()

    @property
    def interrupted(self) -> bool:
        """A signal came before the function finished (it was cancelled)."""
        return self.value is None and bool(self.signals)

    @property
    def exit_code(self) -> int | None:
        """128 + the first signal's number if interrupted, else None."""
        return 128 + self.signals[0] if self.interrupted else None


async def run_until_signalled(
    func: Callable[[], Awaitable[T]],
    *,
    signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS,
) -> Signalled[T]:
    """Run ``func()``; cancel it at the first of ``signals``. See the module docstring."""
    received: list[int] = []
    work = anyio.CancelScope()
    value: list[T] = []

    async def watch(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                    ) -> None:
        with anyio.open_signal_receiver(*signals) as receiver:
            task_status.started()
            async for signum in receiver:
                received.append(int(signum))
                work.cancel()  # again and again: only the first one matters

    async with anyio.create_task_group() as tg:
        await tg.start(watch)
        with work:
            value.append(await func())
        tg.cancel_scope.cancel()
    return Signalled(value[0] if value else None, tuple(received))
