"""``nosend status``: what waits, what is up, what the links cost this month, what comes next.

Owns: the gathering (:func:`gather`) and the two renderings of ``nosend status``: lines
for a person, and ``--json`` (one object; money as decimal strings, times as ISO 8601
with the local offset, sizes in bytes) for scripts and monitoring. It shows the
outbound queue (count, bytes, oldest, urgent, due), remote messages held for their size,
the mailboxes, the link in use and any link up now, the recent cycles from the ledger,
this month's cost per link (with budgets) and per user
(:func:`nosend_link.status.link_status`, :func:`nosend_link.ledger.month_totals`) and
the next cycle the schedule would start (:func:`nosend_link.schedule.next_cycle`).

Must not: change mail or records, take a lock a cycle could trip over (the link-up
marker says what is up; the fetch records are read without their lock, see
:mod:`nosend_link.site`), create a folder, or print a secret.
Exit status: 0, 1 a user error (a broken mail.cfg), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nosend.admin import _config_path, _guarded
from nosend_store.config import Config, load_config

if TYPE_CHECKING:  # imported when used: `nosend --help` stays fast
    from nosend_link.cycle_lock import LinkUp
    from nosend_link.ledger import CycleRecord, MonthTotals
    from nosend_link.plan import LinkPlan
    from nosend_link.schedule import NextCycle
    from nosend_link.site import HeldSnapshot, MailboxSnapshot, QueueSnapshot
    from nosend_link.status import LinkStatus

__all__ = ["RECENT", "StatusReport", "gather", "register", "too_large"]

#: How many of the latest ledger records ``nosend status`` shows, in all and per link
#: (``--json``: each link's own, whatever the other links did since).
RECENT = 10
RECENT_PER_LINK = 3


def register(subparsers: Any) -> None:
    """Add ``nosend status`` to the ``nosend`` parser."""
    p = subparsers.add_parser(
        "status", help="queue, held mail, mailboxes, links, costs and the next cycle",
        description="Show the outbound queue, remote mail held for its size, the mailboxes, "
        "the link in use, recent cycles, this month's cost per link and per user, and "
        "when the next cycle would start.")
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="mail.cfg to use (default: $NOSEND_CONFIG, else the usual place)")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(handler=_guarded(_status))


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything ``nosend status`` shows, gathered once (see :func:`gather`)."""

    config: Config
    now: datetime
    queue: QueueSnapshot
    held: tuple[HeldSnapshot, ...]
    mailboxes: tuple[MailboxSnapshot, ...]
    up_now: tuple[LinkUp, ...]
    recent: tuple[CycleRecord, ...]  # newest first
    recent_per_link: Mapping[str, tuple[CycleRecord, ...]]  # newest first
    month: MonthTotals
    links: tuple[LinkStatus, ...]
    next_cycle: NextCycle


def gather(config: Config, now: datetime | None = None) -> StatusReport:
    """Read the queue, the fetch records, the mailboxes, the marker and the ledger."""
    from nosend_link.cycle_lock import MarkerError, UpMarker  # noqa: PLC0415
    from nosend_link.ledger import Ledger, month_of, month_totals  # noqa: PLC0415
    from nosend_link.schedule import next_cycle  # noqa: PLC0415
    from nosend_link.site import (  # noqa: PLC0415
        last_cycle,
        link_plans,
        read_held,
        read_mailboxes,
        read_queue,
        schedule_state,
    )
    from nosend_link.status import link_status  # noqa: PLC0415

    now = now if now is not None else datetime.now().astimezone()
    state = Path(config.server.data_dir) / "state"
    records = list(Ledger(state / "cycles.jsonl").records())
    year, month_number = month_of(now.timestamp(), now.tzinfo)
    month = month_totals(records, year, month_number, now.tzinfo)
    queue = read_queue(config, now.timestamp())
    try:
        up_now = UpMarker(state).read() if state.is_dir() else ()
    except MarkerError:
        up_now = ()  # the next cycle reports and clears it
    sched = schedule_state(config, queue=queue, last_cycle_start=last_cycle(records),
                           spent=month.links, now=now)
    return StatusReport(
        config=config,
        now=now,
        queue=queue,
        held=read_held(config),
        mailboxes=read_mailboxes(config),
        up_now=tuple(up_now),
        recent=tuple(reversed(records[-RECENT:])),
        recent_per_link=_per_link(records),
        month=month,
        links=link_status(link_plans(config), month, now),
        next_cycle=next_cycle(now, sched),
    )


def _per_link(records: list[CycleRecord]) -> dict[str, tuple[CycleRecord, ...]]:
    found: dict[str, list[CycleRecord]] = {}
    for record in reversed(records):
        if record.link is not None and len(found.setdefault(record.link, [])) < RECENT_PER_LINK:
            found[record.link].append(record)
    return {link: tuple(rs) for link, rs in found.items()}


def _status(args: argparse.Namespace) -> int:
    report = gather(load_config(_config_path(args)))
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=1, ensure_ascii=False)
        print()
    else:
        for line in text_lines(report):
            print(line)
    return 0


# -- renderings -------------------------------------------------------------------------


def _iso(epoch: float | None, tz: Any) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz).isoformat(
        timespec="seconds")


def as_json(report: StatusReport) -> dict[str, Any]:
    """The report as plain JSON values (see the module docstring for the units)."""
    tz = report.now.tzinfo
    q = report.queue
    nxt = report.next_cycle
    month = report.month
    return {
        "config": str(report.config.path),
        "now": report.now.isoformat(timespec="seconds"),
        "queue": {"count": q.count, "bytes": q.bytes, "oldest": _iso(q.oldest, tz),
                  "urgent": q.urgent, "due": len(q.due), "unreadable": q.unreadable,
                  "too_large": [{"link": link, "max_size": cap, "count": n, "bytes": b}
                                for link, cap, n, b in too_large(report)]},
        "held": [{"account": h.account, "count": h.count, "bytes": h.bytes,
                  "fetch_requested": h.fetch_requested}
                 for h in report.held],
        "mailboxes": [{"name": m.name, "count": m.count, "bytes": m.bytes}
                      for m in report.mailboxes],
        "link_in_use": report.config.schedule.link,
        "links_up": [{"link": u.link, "since": _iso(u.since, tz), "pid": u.pid}
                     for u in report.up_now],
        "links": [
            {"name": s.name,
             "usable": s.unusable is None,
             "unusable": s.unusable,
             "month": {"cycles": s.totals.cycles, "seconds": round(s.totals.seconds, 3),
                       "bytes_up": s.totals.bytes_up, "bytes_down": s.totals.bytes_down,
                       "cost": str(s.totals.cost)},
             "budget": None if s.budget is None else {
                 "amount": str(s.budget.amount), "unit": s.budget.unit,
                 "left": str(s.left)},
             "recent_cycles": [_cycle_json(r, tz)
                               for r in report.recent_per_link.get(s.name, ())]}
            for s in report.links
        ],
        "recent_cycles": [_cycle_json(r, tz) for r in report.recent],
        "month": {
            "year": month.year, "month": month.month, "cost": str(month.cost),
            "users": [{"user": u, "bytes_out": t.bytes_out, "bytes_in": t.bytes_in,
                       "cost": str(t.cost)} for u, t in sorted(month.users.items())],
        },
        "next_cycle": {
            "at": None if nxt.when is None else nxt.when.isoformat(timespec="seconds"),
            "reason": nxt.reason,
            "scheduler": report.config.schedule.scheduler,
        },
    }


def _cycle_json(r: CycleRecord, tz: Any) -> dict[str, Any]:
    return {"start": _iso(r.start, tz), "link": r.link, "result": r.result,
            "seconds": round(r.online_seconds, 3), "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down, "messages_out": r.messages_out,
            "messages_in": r.messages_in, "cost": str(r.cost), "error": r.error}


def _size(nbytes: int) -> str:
    """Powers of 1000, as bills count (like the cycle's progress line)."""
    if nbytes < 1000:
        return f"{nbytes} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6)):
        if nbytes / scale < 1000:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e9:.2f} GB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def text_lines(report: StatusReport) -> list[str]:
    """The report for a person, one fact a line."""
    from nosend_link.status import status_lines  # noqa: PLC0415

    tz = report.now.tzinfo
    when = "%Y-%m-%d %H:%M"
    q = report.queue
    lines = []
    if q.count and q.oldest is not None:
        oldest = datetime.fromtimestamp(q.oldest, tz).strftime(when)
        extra = f", {q.urgent} urgent" if q.urgent else ""
        lines.append(f"queue: {_plural(q.count, 'message')}, {_size(q.bytes)}, oldest "
                     f"{oldest}, {q.count - len(q.due)} waiting to retry{extra}")
    else:
        lines.append("queue: empty")
    if q.unreadable:
        lines.append(f"  {q.unreadable} unreadable entr{'y' if q.unreadable == 1 else 'ies'}"
                     " (see nosend queue list)")
    for link, cap, count, nbytes in too_large(report):
        lines.append(f"  too large for link {link} (max_size {_size(cap)}): "
                     f"{_plural(count, 'message')}, {_size(nbytes)}; they wait for a link "
                     "that takes them")
    for h in report.held:
        if h.count:
            wanted = f" ({h.fetch_requested} to fetch)" if h.fetch_requested else ""
            lines.append(f"held on {h.account}: {_plural(h.count, 'message')}, "
                         f"{_size(h.bytes)}{wanted} (nosend held list)")
    boxes = ", ".join(f"{m.name} {m.count} ({_size(m.bytes)})" for m in report.mailboxes)
    lines.append(f"mailboxes: {boxes or 'none'}")
    lines.append(f"link in use: {report.config.schedule.link}")
    for u in report.up_now:
        since = datetime.fromtimestamp(u.since, tz).strftime(when)
        lines.append(f"link up now: {u.link} since {since} (pid {u.pid})")
    if report.recent:
        lines.append("recent cycles (newest first):")
        for r in report.recent:
            start = datetime.fromtimestamp(r.start, tz).strftime(when)
            error = f"  {r.error}" if r.error else ""
            lines.append(f"  {start}  {r.link or '-'}  {r.result}  "
                         f"{_size(r.bytes_up + r.bytes_down)}  {_money(r.cost)}{error}")
    else:
        lines.append("recent cycles: none")
    plans = _plans(report.config)
    lines += status_lines(plans, report.month, report.now)
    nxt = report.next_cycle
    at = "none" if nxt.when is None else nxt.when.strftime(when)
    lines.append(f"next cycle: {at} ({nxt.reason})")
    pop3 = sorted(n for n, a in report.config.accounts.items() if a.type == "pop3")
    if nxt.when is None and pop3:
        # Mail waiting on a remote account is unseen until a cycle asks: say what fetches it.
        lines.append(f"  (account {', '.join(pop3)}: fetched by nosend check, or by a "
                     "[schedule] times or every)")
    if not report.config.schedule.scheduler:
        lines.append("  ([schedule] scheduler = no: nosend serve does not start it; "
                     "cron or a timer runs nosend check)")
    return lines


def too_large(report: StatusReport) -> list[tuple[str, int, int, int]]:
    """Per link with a ``max_size``: (link, cap, messages, bytes) of the queued messages
    due to go that are larger, so wait for a link that takes them (issue: a costly
    link's cap keeps big mail for a cheaper one). Links that would take all are left
    out."""
    out = []
    for plan in _plans(report.config):
        if plan.max_size is None:
            continue
        over = [size for size in report.queue.due if size > plan.max_size]
        if over:
            out.append((plan.name, plan.max_size, len(over), sum(over)))
    return out


def _plans(config: Config) -> tuple[LinkPlan, ...]:
    from nosend_link.site import link_plans  # noqa: PLC0415

    return link_plans(config)
