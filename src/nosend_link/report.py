"""The cycle report to the postmaster (``[schedule] report = each`` or ``daily``).

Owns: :func:`report_message` (a short plain-text message: each cycle's link, duration,
bytes and messages each way, cost and errors), :func:`report_after_cycle` (what to
report after a cycle: that cycle, or once a day the cycles since the last daily report,
remembered in ``state/report-daily``) and :func:`deliver_report`, which puts it
into the postmaster's local mailboxes through the store's Maildir delivery (the same
:class:`~nosend_runners.mail.delivery.MessageSink` that delivery reports use; envelope
sender ``<>``).

Decision: the report is delivered to local mailboxes only. When ``postmaster`` points to
a remote address (nothing local), no report is made: a report about what the link cost
must never itself be sent over the link.

A daily report is made by the first cycle of a new day (nosend has no timer of its
own); a day without cycles has nothing to report. It is delivered before the day is
marked as reported: a crash in between repeats the report, never loses it.

Must not: send anything over a link, or write anything but the report and its mark.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from nosend_link import _format
from nosend_link.ledger import CycleRecord, Ledger
from nosend_store.config import Config

__all__ = ["DAY", "deliver_report", "report_after_cycle", "report_message"]

#: Seconds a first daily report looks back (there is no mark yet).
DAY = 24 * 3600.0


def _line(record: CycleRecord) -> list[str]:
    start = datetime.fromtimestamp(record.start).astimezone()
    out = [f"{start:%Y-%m-%d %H:%M} {record.result}: link {record.link or 'none'}, "
           f"{_format.duration(record.duration)} in all, "
           f"{_format.duration(record.online_seconds)} online",
           f"  sent {record.messages_out} message(s), fetched {record.messages_in}; "
           f"{_format.size(record.bytes_up)} up, {_format.size(record.bytes_down)} down; "
           f"cost {_format.money(record.cost)}"]
    out += [f"  {u.user}: {_format.size(u.bytes_out)} out, {_format.size(u.bytes_in)} in, "
            f"{_format.money(u.cost)}" for u in record.users]
    out += [f"  failed link {a.link}: {a.error} ({_format.money(a.cost)})"
            for a in record.attempts]
    if record.error:
        out.append(f"  errors: {record.error}")
    return out


def report_message(config: Config, records: Sequence[CycleRecord], *,
                   now: float | None = None) -> bytes:
    """The report for ``records`` as a message (CRLF line ends)."""
    host = config.server.hostname
    when = time.time() if now is None else now
    subject = (f"nosend cycle: {records[-1].result}" if len(records) == 1
               else f"nosend cycles: {len(records)}")
    body: list[str] = []
    for record in records:
        body += _line(record)
    lines = [
        f"From: Nos End Mail <MAILER-DAEMON@{host}>",
        f"To: postmaster@{host}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(when, localtime=True)}",
        f"Message-ID: {email.utils.make_msgid('cycle', domain=host)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Auto-Submitted: auto-generated",  # RFC 3834 section 5
        "",
        *body,
        "",
    ]
    return "\r\n".join(lines).encode()


def deliver_report(config: Config, records: Sequence[CycleRecord]) -> bool:
    """Deliver the report into the postmaster's local mailboxes, durably; False when
    there is none (nothing local, or no records). Blocking."""
    from nosend_runners.mail.delivery import MessageSink  # noqa: PLC0415

    resolution = config.resolve("postmaster")
    if not records or resolution is None or not resolution.mailboxes:
        return False
    sink = MessageSink(config, mailboxes=resolution.mailboxes, envelope=None, trace=b"",
                       return_path="")
    sink.open()
    try:
        sink.write(report_message(config, records))
    except BaseException:
        sink.abort()
        raise
    sink.commit()
    return True


def report_after_cycle(config: Config, record: CycleRecord, *,
                       now: float | None = None) -> bool:
    """After a cycle that made ``record``: deliver what ``[schedule] report`` asks for.
    True if a report was delivered. Blocking."""
    mode = config.schedule.report
    if record.link is None and not record.attempts:
        return False  # no link was touched: nothing to bill, nothing in the ledger
    if mode == "each":
        return deliver_report(config, [record])
    if mode != "daily":
        return False
    now = time.time() if now is None else now
    mark = Path(config.server.data_dir) / "state" / "report-daily"
    try:
        last: float | None = float(mark.read_text().strip())
    except (FileNotFoundError, ValueError):
        last = None
    today = datetime.fromtimestamp(now).astimezone().date()
    if last is not None and datetime.fromtimestamp(last).astimezone().date() >= today:
        return False
    since = last if last is not None else now - DAY
    records = [r for r in Ledger(mark.with_name("cycles.jsonl")).records() if r.start > since]
    delivered = deliver_report(config, records)
    tmp = mark.with_name(mark.name + ".tmp")
    tmp.write_text(f"{now}\n")
    os.replace(tmp, mark)
    return delivered
