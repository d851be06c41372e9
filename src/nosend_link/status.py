"""The month so far, per link and per user, for ``nosend status``.

Owns: :func:`link_status` (each link's month from the ledger totals, its budget and
what is left of it, and whether it may be used now) and :func:`status_lines` (the
same, with each user's share, as lines for a person). Must not: read the ledger or the
clock; the caller passes :func:`~nosend_link.ledger.month_totals` and ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from nosend_link import _format
from nosend_link.choice import unusable_reason
from nosend_link.ledger import LinkTotals, MonthTotals
from nosend_link.plan import Budget, LinkPlan, megabytes

__all__ = ["LinkStatus", "link_status", "status_lines"]


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """One link's month: ``totals``, its ``budget`` and what is ``left`` of it (money,
    or megabytes for a volume budget; None without a budget), and why it may not be
    used now (None: it may)."""

    name: str
    totals: LinkTotals
    budget: Budget | None
    left: Decimal | None
    unusable: str | None


def link_status(plans: Iterable[LinkPlan], month: MonthTotals, now: datetime
                ) -> tuple[LinkStatus, ...]:
    """Every configured link's month, and links no longer configured that the ledger
    still bills (with no budget), in name order."""
    by_name = {p.name: p for p in plans}
    out = []
    for name in sorted(set(by_name) | set(month.links)):
        totals = month.links.get(name, LinkTotals())
        plan = by_name.get(name)
        budget = plan.budget if plan else None
        left = None
        if budget is not None:
            used = megabytes(totals.bytes) if budget.unit == "MB" else totals.cost
            left = max(budget.amount - used, Decimal(0))
        unusable = (unusable_reason(plan, now, month.links) if plan
                    else "not in mail.cfg")
        out.append(LinkStatus(name, totals, budget, left, unusable))
    return tuple(out)


def status_lines(plans: Iterable[LinkPlan], month: MonthTotals, now: datetime) -> list[str]:
    """The month for a person: a line per link, then a line per user."""
    lines = [f"{month.year}-{month.month:02d}: {_format.money(month.cost)} in all"]
    for s in link_status(plans, month, now):
        t = s.totals
        text = (f"  link {s.name}: {t.cycles} cycle(s), {_format.duration(t.seconds)} online, "
                f"{_format.size(t.bytes)}, {_format.money(t.cost)}")
        if s.budget is not None and s.left is not None:
            if s.budget.unit == "MB":
                text += f", {s.left.normalize():f} of {s.budget.amount} MB left"
            else:
                text += f", {_format.money(s.left)} of {s.budget.amount} left"
        if s.unusable:
            text += f" ({s.unusable})"
        lines.append(text)
    for user in sorted(month.users):
        u = month.users[user]
        lines.append(f"  user {user}: {_format.size(u.bytes_out)} sent, "
                     f"{_format.size(u.bytes_in)} received, {_format.money(u.cost)}")
    return lines
