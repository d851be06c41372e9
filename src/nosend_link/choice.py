"""Which link a cycle uses, in what order it falls back, and what it would cost.

Owns: :func:`estimate` (time and cost to move what waits over one link),
:func:`choose` (the order of links to try) and :func:`dry_run` (what a cycle would do,
for ``--dry-run``: it reads nothing and writes nothing; the caller passes the month's
totals from the ledger).

The order, by ``mode``:

- a link's name: that link only, the one the user put in use. No fallback: whoever
  picked the GSM link does not want to be switched to Iridium at a dollar a minute
  without being asked;
- ``auto``: every usable link by ``priority`` (lower first), then name;
- ``cost``: every usable link by the least estimated cost for what waits, then
  ``priority``, then name.

A link is not usable when it is disabled, outside its ``hours`` (local time of ``now``),
may carry nothing that waits (every waiting message over its ``max_size`` and no
account fetched over it: dialling would cost the set-up for nothing), or has spent its
monthly ``budget`` (:meth:`~nosend_link.plan.Budget.exhausted` on the
month's totals; an estimate that would cross the budget does not exclude a link, or
one large message would block a link for the rest of the month). The reasons are
returned with the choice, for the log and the dry run.

Estimates (units in :mod:`nosend_link.plan`): the bytes are the queued messages the link
may carry (``max_size``) plus the caller's guess of what will be fetched; the time is
``setup_seconds + bytes / rate``; the cost is :func:`~nosend_link.plan.cost_of` of both.

Must not: run commands, probe, read files or the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from nosend_link import _format
from nosend_link.ledger import LinkTotals
from nosend_link.plan import LinkPlan, Waiting

__all__ = ["AUTO", "COST", "Choice", "DryRun", "Estimate", "Excluded", "choose", "dry_run",
           "estimate", "unusable_reason"]

AUTO = "auto"
COST = "cost"


@dataclass(frozen=True, slots=True)
class Estimate:
    """What using ``plan`` for what waits would take: messages sent (and held back by
    ``max_size``), accounts fetched, bytes, seconds and cost."""

    plan: LinkPlan
    messages: int
    held: int
    accounts: tuple[str, ...]
    bytes: int
    seconds: float
    cost: Decimal


@dataclass(frozen=True, slots=True)
class Excluded:
    """A link left out of the choice, and why."""

    link: str
    reason: str


@dataclass(frozen=True, slots=True)
class Choice:
    """The links to try, first first, and the links left out."""

    order: tuple[Estimate, ...]
    excluded: tuple[Excluded, ...]


def estimate(plan: LinkPlan, waiting: Waiting) -> Estimate:
    """Time and cost of moving ``waiting`` over ``plan`` (see the module docstring)."""
    carried = [s for s in waiting.sizes_out if plan.carries(s)]
    accounts = tuple(a for a in waiting.accounts if plan.fetches(a))
    nbytes = sum(carried) + (waiting.bytes_in if accounts else 0)
    seconds = plan.setup_seconds + nbytes / plan.rate
    return Estimate(plan, len(carried), len(waiting.sizes_out) - len(carried), accounts,
                    nbytes, seconds, plan.cost(seconds, nbytes))


def unusable_reason(
    plan: LinkPlan, now: datetime, spent: Mapping[str, LinkTotals]
) -> str | None:
    """Why ``plan`` may not be used at ``now`` (None: it may)."""
    if not plan.enabled:
        return "disabled"
    if not plan.hours.allows(now):
        return f"outside its hours (next {plan.hours.next_allowed(now):%H:%M})"
    if plan.budget is not None:
        month = spent.get(plan.name, LinkTotals())
        if plan.budget.exhausted(month.cost, month.bytes):
            unit = "MB" if plan.budget.unit == "MB" else ""
            return f"monthly budget {plan.budget.amount}{' ' + unit if unit else ''} spent"
    return None


def choose(
    plans: Iterable[LinkPlan],
    waiting: Waiting,
    *,
    mode: str = AUTO,
    now: datetime,
    spent: Mapping[str, LinkTotals] | None = None,
) -> Choice:
    """The links to try for ``waiting`` at ``now``; ``spent`` is this month's totals
    per link (from :func:`~nosend_link.ledger.month_totals`)."""
    spent = spent or {}
    plans = list(plans)
    if mode not in (AUTO, COST):
        plans_named = [p for p in plans if p.name == mode]
        if not plans_named:
            return Choice((), (Excluded(mode, "no such link"),))
        plans = plans_named
    usable: list[Estimate] = []
    excluded: list[Excluded] = []
    for plan in plans:
        reason = unusable_reason(plan, now, spent)
        if reason is not None:
            excluded.append(Excluded(plan.name, reason))
            continue
        guess = estimate(plan, waiting)
        if waiting.has_work and not guess.messages and not guess.accounts:
            # Dialling to move nothing costs the set-up time and more.
            excluded.append(Excluded(plan.name, "carries nothing that waits (max_size, "
                                                "accounts)"))
            continue
        usable.append(guess)
    if mode == COST:
        usable.sort(key=lambda e: (e.cost, e.plan.priority, e.plan.name))
    else:
        usable.sort(key=lambda e: (e.plan.priority, e.plan.name))
    return Choice(tuple(usable), tuple(excluded))


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a cycle would do now, and nothing done: see :meth:`lines`."""

    choice: Choice
    waiting: Waiting

    @property
    def nothing_to_do(self) -> bool:
        """No mail waits and no account is to be fetched."""
        return not self.waiting.has_work

    @property
    def link(self) -> Estimate | None:
        """The link that would be tried first (None: nothing to do, or no usable link)."""
        return None if self.nothing_to_do or not self.choice.order else self.choice.order[0]

    def lines(self) -> list[str]:
        """The dry run for a person, one fact a line."""
        w = self.waiting
        out = [f"waiting: {len(w.sizes_out)} message(s), {_format.size(sum(w.sizes_out))}; "
               f"{len(w.accounts)} account(s) to fetch"]
        if self.nothing_to_do:
            return [*out, "nothing to do: no link would be used"]
        first = self.link
        if first is None:
            out.append("no link may be used now")
        else:
            out.append(self._line("would use", first))
            out += [self._line("  then", e) for e in self.choice.order[1:]]
        out += [f"  not {x.link}: {x.reason}" for x in self.choice.excluded]
        return out

    @staticmethod
    def _line(lead: str, e: Estimate) -> str:
        held = f" ({e.held} held back by max_size)" if e.held else ""
        return (f"{lead} {e.plan.name}: {e.messages} message(s){held}, "
                f"{len(e.accounts)} account(s), {_format.size(e.bytes)}, "
                f"about {_format.duration(e.seconds)}, about {_format.money(e.cost)}")


def dry_run(
    plans: Iterable[LinkPlan],
    waiting: Waiting,
    *,
    mode: str = AUTO,
    now: datetime,
    spent: Mapping[str, LinkTotals] | None = None,
) -> DryRun:
    """What a cycle would do for ``waiting`` at ``now``; changes nothing."""
    return DryRun(choose(plans, waiting, mode=mode, now=now, spent=spent), waiting)
