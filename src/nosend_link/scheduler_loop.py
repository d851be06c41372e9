"""The scheduler's loop: ``nosend watch`` runs it alone, ``nosend serve`` as one task.

Owns: :class:`SchedulerLoop` -- look at the queue and the ledger, ask
:func:`~nosend_link.schedule.next_cycle` when the next cycle is due, sleep until then,
run it, and again -- and :func:`observe` (what it looks at) and :func:`run_site_cycle`
(one cycle for a site, as ``nosend check`` runs it). The clock, the sleep, what is
observed and the cycle are injectable, so tests drive the loop with a fake clock.

Decisions:

- The loop wakes every ``poll`` seconds (default :data:`POLL_INTERVAL`) even when the
  next cycle is far off, to see newly queued mail (urgent mail, or a new oldest
  message). Looking costs a directory listing and a few small reads; it never touches
  the link (no probe between cycles: a demand-dialled link must not be kept awake).
- "Never more often than ``min_interval``" counts every cycle this loop started, not
  only those in the ledger: a cycle that found nothing to do or no usable link is not
  recorded there (the ledger is a bill), and must not be retried at every poll.
- A cycle's blocking work (files, commands) runs in worker threads, so inside ``nosend
  serve`` a cycle never holds up the mail service; the loop itself only sleeps.
- Cancellation (SIGTERM in ``watch``, the end of ``serve``) reaches a running cycle,
  whose ``down`` still runs (:mod:`nosend_link.cycle`).

Must not: read ``mail.cfg`` itself (the caller passes a function that gives the current
one, so a reload takes effect at the next look), or decide anything
:func:`~nosend_link.schedule.next_cycle` decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import anyio
import anyio.to_thread

from nosend_link.cycle import CycleOutcome
from nosend_link.cycle_lock import state_dir
from nosend_link.ledger import Ledger, month_of, month_totals
from nosend_link.online import Exchange
from nosend_link.progress import ProgressEvent
from nosend_link.schedule import NextCycle, ScheduleState, next_cycle
from nosend_link.site import last_cycle, read_queue, schedule_state
from nosend_store.config import Config

__all__ = ["POLL_INTERVAL", "SchedulerLoop", "observe", "run_site_cycle"]

_log = logging.getLogger("nosend.scheduler")

#: Seconds between two looks at the queue while no cycle is due.
POLL_INTERVAL = 5.0


def _local_now() -> datetime:
    return datetime.now().astimezone()


def observe(config: Config, now: datetime) -> ScheduleState:
    """What the schedule needs, from the queue and the ledger (blocking: run it in a
    thread). Reads only; creates nothing."""
    ledger = Ledger(Path(config.server.data_dir) / "state" / "cycles.jsonl")
    records = list(ledger.records())
    year, month = month_of(now.timestamp(), now.tzinfo)
    return schedule_state(
        config,
        queue=read_queue(config, now.timestamp()),
        last_cycle_start=last_cycle(records),
        spent=month_totals(records, year, month, now.tzinfo).links,
        now=now,
    )


async def run_site_cycle(
    config: Config,
    *,
    progress: Callable[[ProgressEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
    wrap: Callable[[Exchange], Exchange] | None = None,
) -> CycleOutcome:
    """One cycle for ``config``'s site, as ``nosend check`` runs it (no ``--link``).
    ``wrap`` may wrap the exchange (``nosend watch`` as root: the service user's ids)."""
    from nosend_link.exchange import (  # noqa: PLC0415 -- the runners, when needed
        cycle_exchange,
        site_cycle,
        waiting_now,
    )

    state = await anyio.to_thread.run_sync(state_dir, config.server.data_dir)
    waiting = await anyio.to_thread.run_sync(waiting_now, config)
    exchange = cycle_exchange(config)
    cycle = site_cycle(config, state, progress=progress, log=log,
                       exchange=wrap(exchange) if wrap is not None else exchange)
    return await cycle.run(waiting)


class SchedulerLoop:
    """Starts cycles when the schedule says; see the module docstring.

    ``config`` gives the configuration in force; ``cycle(config)`` runs one cycle.
    ``observe(config, now)`` (blocking, run in a thread) says what waits; ``now`` gives
    the local time; ``sleep(seconds)`` waits.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        cycle: Callable[[Config], Awaitable[CycleOutcome | None]],
        *,
        observe: Callable[[Config, datetime], ScheduleState] = observe,
        now: Callable[[], datetime] = _local_now,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        poll: float = POLL_INTERVAL,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._cycle = cycle
        self._observe = observe
        self._now = now
        self._sleep = sleep
        self._poll = poll
        self._log = log if log is not None else _log.info
        self._started: datetime | None = None
        self._last_reason: str | None = None

    @property
    def last_started(self) -> datetime | None:
        """When this loop last started a cycle (None: not yet)."""
        return self._started

    async def decide(self, config: Config) -> tuple[datetime, NextCycle]:
        """Look once: the time of the look and when the next cycle is due."""
        now = self._now()
        state = await anyio.to_thread.run_sync(self._observe, config, now)
        if self._started is not None and (
                state.last_cycle is None or state.last_cycle < self._started):
            state = replace(state, last_cycle=self._started)
        return now, next_cycle(now, state)

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            config = self._config()
            now, decision = await self.decide(config)
            if decision.when is not None and decision.when <= now:
                self._log(f"starting a cycle: {decision.reason}")
                self._started = now
                self._last_reason = None
                await self._cycle(config)
                continue
            if decision.reason != self._last_reason:
                when = "" if decision.when is None else f" at {decision.when:%Y-%m-%d %H:%M}"
                self._log(f"next cycle{when}: {decision.reason}")
                self._last_reason = decision.reason
            wait = self._poll
            if decision.when is not None:
                wait = min(wait, (decision.when - now).total_seconds())
            await self._sleep(max(wait, 0.0))
