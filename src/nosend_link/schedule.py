"""When ``nosend serve`` and ``nosend watch`` start the next cycle: pure logic.

Owns: :class:`SchedulePolicy` (the triggers and the minimum interval),
:class:`ScheduleState` (what the caller knows now) and :func:`next_cycle`, which says
when and why. The caller sleeps until then (or until the queue changes), runs a cycle
and asks again; tests call it with any ``now`` and need no clock and no sleep.

The triggers; the earliest wins:

- urgent mail waits: now;
- the oldest queued message has waited ``queue_age``: then;
- a time of day in ``times`` (``06:00, 18:00``): the first one after the last cycle
  (so a scheduled call missed while nosend was stopped is made once on start, like
  anacron), or, before any cycle, the next one from now;
- ``every`` seconds since the last cycle (before any cycle: now).

Then the limits: never sooner than ``min_interval`` after the last cycle's start, and
only while at least one link may be used -- enabled, within its ``hours`` and under its
``budget`` (the month's totals are the caller's). If every link is disabled or has
spent its budget there is no next cycle; the caller asks again when something changes
(a new month, a reloaded ``mail.cfg``). With no links configured, hours and budgets do
not apply. Pass the links a cycle may use: only the link in use, when one is.

:func:`parse_times` (``06:00, 18:00``) lives in :mod:`nosend_store.link_values`, where
``mail.cfg``'s ``[schedule] times`` is read, and is re-exported here.

Must not: read the clock, files or the queue; run anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from nosend_link.ledger import LinkTotals
from nosend_link.plan import LinkPlan
from nosend_store.link_values import parse_times

__all__ = ["NextCycle", "SchedulePolicy", "ScheduleState", "next_cycle", "parse_times"]


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The triggers (see the module docstring); seconds for every length of time.

    Defaults: a cycle once queued mail has waited 15 minutes, no fixed times, no
    interval, and at least 5 minutes between cycle starts.
    """

    queue_age: float | None = 15 * 60
    times: tuple[time, ...] = ()
    every: float | None = None
    min_interval: float = 5 * 60


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the caller knows: the policy, when the last cycle started, what waits, the
    links and this month's totals per link (for budgets)."""

    policy: SchedulePolicy = SchedulePolicy()
    last_cycle: datetime | None = None
    oldest_waiting: datetime | None = None
    urgent: bool = False
    links: tuple[LinkPlan, ...] = ()
    spent: Mapping[str, LinkTotals] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NextCycle:
    """When the next cycle should start (None: not until something changes) and why."""

    when: datetime | None
    reason: str


def _next_time_of_day(after: datetime, times: tuple[time, ...], strictly: bool) -> datetime:
    found = []
    for day in (0, 1):
        date = after.date() + timedelta(days=day)
        for t in times:
            moment = datetime.combine(date, t, tzinfo=after.tzinfo)
            if moment > after or (moment == after and not strictly):
                found.append(moment)
    return min(found)


def next_cycle(now: datetime, state: ScheduleState) -> NextCycle:
    """When and why the next cycle should start, seen from ``now``."""
    policy, last = state.policy, state.last_cycle
    triggers: list[tuple[datetime, str]] = []
    if state.urgent:
        triggers.append((now, "urgent mail waits"))
    if policy.queue_age is not None and state.oldest_waiting is not None:
        triggers.append((state.oldest_waiting + timedelta(seconds=policy.queue_age),
                         f"mail has waited {policy.queue_age / 60:g} min"))
    if policy.times:
        at = _next_time_of_day(last or now, policy.times, strictly=last is not None)
        triggers.append((at, f"scheduled at {at:%H:%M}"))
    if policy.every is not None:
        at = now if last is None else last + timedelta(seconds=policy.every)
        triggers.append((at, f"every {policy.every / 3600:g} h"))
    if not triggers:
        return NextCycle(None, "no outbound mail waits and no schedule")
    when, reason = min(triggers, key=lambda t: t[0])
    when = max(when, now)
    if last is not None and when < last + timedelta(seconds=policy.min_interval):
        when = last + timedelta(seconds=policy.min_interval)
        reason += f" (not sooner than {policy.min_interval / 60:g} min after the last cycle)"
    if not state.links:
        return NextCycle(when, reason)
    usable = [
        p for p in state.links
        if p.enabled and not (
            p.budget is not None
            and p.budget.exhausted(state.spent.get(p.name, LinkTotals()).cost,
                                   state.spent.get(p.name, LinkTotals()).bytes)
        )
    ]
    if not usable:
        return NextCycle(None, f"{reason}, but every link is disabled or over its budget")
    opens = min((p.hours.next_allowed(when), p.name) for p in usable)
    if opens[0] > when:
        return NextCycle(opens[0], f"{reason}, when link {opens[1]}'s hours begin")
    return NextCycle(when, reason)
