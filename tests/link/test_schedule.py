"""The scheduler's triggers and limits, with a fake clock: ``now`` is just an argument."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from nosend_link.ledger import LinkTotals
from nosend_link.plan import Budget, Hours, LinkPlan, PlanError
from nosend_link.schedule import (
    NextCycle,
    SchedulePolicy,
    ScheduleState,
    next_cycle,
    parse_times,
)


def at(hour: int, minute: int = 0, day: int = 7) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


NO_AGE = SchedulePolicy(queue_age=None, min_interval=0)


def test_nothing_waiting_and_no_schedule_means_no_cycle() -> None:
    assert next_cycle(at(12), ScheduleState()) == NextCycle(
        None, "no outbound mail waits and no schedule")


def test_mail_older_than_the_queue_age_starts_a_cycle() -> None:
    state = ScheduleState(policy=SchedulePolicy(queue_age=15 * 60, min_interval=0),
                          oldest_waiting=at(11, 50))
    assert next_cycle(at(12), state) == NextCycle(at(12, 5), "mail has waited 15 min")
    # Already overdue: now.
    assert next_cycle(at(13), state).when == at(13)


def test_urgent_mail_goes_now_but_not_sooner_than_the_minimum_interval() -> None:
    policy = SchedulePolicy(min_interval=10 * 60)
    assert next_cycle(at(12), ScheduleState(policy=policy, urgent=True)) == NextCycle(
        at(12), "urgent mail waits")
    held = next_cycle(at(12), ScheduleState(policy=policy, urgent=True, last_cycle=at(11, 55)))
    assert held.when == at(12, 5)
    assert held.reason == "urgent mail waits (not sooner than 10 min after the last cycle)"


def test_times_of_day_after_the_last_cycle_including_a_missed_one() -> None:
    policy = SchedulePolicy(queue_age=None, times=parse_times("18:00, 06:00"),
                            min_interval=0)
    assert policy.times == (time(6), time(18))
    # First start, no cycle yet: the next time from now.
    assert next_cycle(at(12), ScheduleState(policy=policy)) == NextCycle(
        at(18), "scheduled at 18:00")
    # The 18:00 cycle ran; the next is 06:00 tomorrow.
    assert next_cycle(at(18, 1), ScheduleState(policy=policy, last_cycle=at(18))).when == at(
        6, day=8)
    # nosend was stopped over the 06:00 call: it is made now, once.
    state = ScheduleState(policy=policy, last_cycle=at(18, day=6))
    assert next_cycle(at(9), state) == NextCycle(at(9), "scheduled at 06:00")


def test_every_n_hours_since_the_last_cycle() -> None:
    policy = SchedulePolicy(queue_age=None, every=6 * 3600, min_interval=0)
    assert next_cycle(at(12), ScheduleState(policy=policy)).when == at(12)
    state = ScheduleState(policy=policy, last_cycle=at(10))
    assert next_cycle(at(12), state) == NextCycle(at(16), "every 6 h")


def test_the_earliest_trigger_wins() -> None:
    policy = SchedulePolicy(queue_age=30 * 60, times=(time(13),), every=4 * 3600,
                            min_interval=0)
    state = ScheduleState(policy=policy, last_cycle=at(11), oldest_waiting=at(12, 10))
    assert next_cycle(at(12, 15), state) == NextCycle(at(12, 40), "mail has waited 30 min")
    later = ScheduleState(policy=policy, last_cycle=at(11), oldest_waiting=at(12, 50))
    assert next_cycle(at(12, 55), later) == NextCycle(at(13), "scheduled at 13:00")


def test_never_outside_every_links_hours() -> None:
    day = LinkPlan("marina", hours=Hours.parse("08:00-20:00"))
    night = LinkPlan("iridium", hours=Hours.parse("22:00-23:00"))
    state = ScheduleState(policy=NO_AGE, urgent=True, links=(day, night))
    assert next_cycle(at(21), state) == NextCycle(
        at(22), "urgent mail waits, when link iridium's hours begin")
    assert next_cycle(at(23, 30), state).when == at(8, day=8)
    assert next_cycle(at(9), state) == NextCycle(at(9), "urgent mail waits")


def test_never_over_budget_and_not_on_a_disabled_link() -> None:
    capped = LinkPlan("iridium", budget=Budget(Decimal(50)))
    off = LinkPlan("gsm", enabled=False)
    spent = {"iridium": LinkTotals(cost=Decimal("50.0000"))}
    state = ScheduleState(policy=NO_AGE, urgent=True, links=(capped, off), spent=spent)
    assert next_cycle(at(12), state) == NextCycle(
        None, "urgent mail waits, but every link is disabled or over its budget")
    under = ScheduleState(policy=NO_AGE, urgent=True, links=(capped, off),
                          spent={"iridium": LinkTotals(cost=Decimal("49.9999"))})
    assert next_cycle(at(12), under).when == at(12)


def test_a_fake_clock_walks_a_day_of_cycles() -> None:
    """Drive the scheduler as serve would: run each cycle when due, a day long."""
    policy = SchedulePolicy(queue_age=None, times=parse_times("06:00, 18:00"),
                            every=None, min_interval=3600)
    now, last, ran = at(0), None, []
    while now < at(0, day=8):
        due = next_cycle(now, ScheduleState(policy=policy, last_cycle=last))
        assert due.when is not None
        now = due.when
        if now >= at(0, day=8):
            break
        ran.append(now)
        last, now = now, now + timedelta(minutes=7)  # the cycle took 7 minutes
    assert ran == [at(6), at(18)]


def test_times_must_be_times_of_day() -> None:
    assert parse_times("") == ()
    for bad in ("6", "24:00", "12:60", "noon"):
        with pytest.raises(PlanError):
            parse_times(bad)
