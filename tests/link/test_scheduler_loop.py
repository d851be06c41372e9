"""The scheduler loop with a fake clock: cycles start at the right moments, never more
often than min_interval, and the loop wakes to see new mail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import anyio
import pytest

from nosend_link.schedule import SchedulePolicy, ScheduleState
from nosend_link.scheduler_loop import SchedulerLoop
from nosend_store.config import Config

T0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)


class _Stop(Exception):
    pass


@dataclass
class Site:
    """A fake clock, queue and ledger."""

    policy: SchedulePolicy
    horizon: float
    seconds: float = 0.0
    oldest: float | None = None  # seconds after T0 the oldest queued message arrived
    urgent: bool = False
    arrivals: list[float] = field(default_factory=list)  # more mail at these seconds
    cycles: list[float] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    recorded: bool = True  # does a cycle reach the ledger?
    empties_queue: bool = True

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.seconds += seconds
        for at in list(self.arrivals):
            if at <= self.seconds:
                self.arrivals.remove(at)
                if self.oldest is None:
                    self.oldest = at
        if self.seconds > self.horizon:
            raise _Stop

    def observe(self, config: Config, now: datetime) -> ScheduleState:
        ledger = [c for c in self.cycles] if self.recorded else []
        return ScheduleState(
            policy=self.policy,
            last_cycle=T0 + timedelta(seconds=max(ledger)) if ledger else None,
            oldest_waiting=None if self.oldest is None else T0 + timedelta(seconds=self.oldest),
            urgent=self.urgent,
        )

    async def cycle(self, config: Config) -> None:
        self.cycles.append(self.seconds)
        if self.empties_queue:
            self.oldest = None
            self.urgent = False


def run(site: Site, poll: float = 30.0) -> None:
    loop = SchedulerLoop(lambda: None, site.cycle, observe=site.observe,  # type: ignore[arg-type,return-value]
                         now=site.now, sleep=site.sleep, poll=poll, log=lambda line: None)

    async def main() -> None:
        with pytest.raises(_Stop):
            await loop.run()

    anyio.run(main)


def test_a_cycle_starts_when_queued_mail_has_waited_queue_age_and_new_mail_wakes_it() -> None:
    site = Site(SchedulePolicy(queue_age=600, min_interval=300), horizon=3000, oldest=0.0,
                arrivals=[700.0])
    run(site)
    assert site.cycles == [600.0, 1300.0]
    # It never slept past the poll interval, so newly queued mail is seen within it.
    assert max(site.sleeps) <= 30.0


def test_never_more_often_than_min_interval_even_when_cycles_are_not_recorded() -> None:
    # Urgent mail that never leaves (no usable link): the ledger stays empty, and yet
    # the loop does not call a cycle at every poll.
    site = Site(SchedulePolicy(queue_age=None, min_interval=300), horizon=1000,
                urgent=True, recorded=False, empties_queue=False)
    run(site)
    assert site.cycles == [0.0, 300.0, 600.0, 900.0]


def test_scheduled_times_and_every() -> None:
    site = Site(SchedulePolicy(queue_age=None, times=(time(6, 0),), min_interval=0),
                horizon=2 * 3600)
    run(site, poll=600)
    assert site.cycles == [3600.0]  # 06:00, one hour after T0
    site = Site(SchedulePolicy(queue_age=None, every=1800, min_interval=0), horizon=4000)
    run(site, poll=600)
    assert site.cycles == [0.0, 1800.0, 3600.0]


def test_nothing_waiting_and_no_schedule_runs_nothing() -> None:
    site = Site(SchedulePolicy(queue_age=600, min_interval=300), horizon=5000)
    run(site)
    assert site.cycles == []
