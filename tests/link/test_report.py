"""The report to the postmaster: each cycle, or once a day; always local."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from nosend_link.ledger import CycleRecord, Ledger, UserShare
from nosend_link.report import report_after_cycle
from nosend_store.config import load_config
from tests.link.relay_support import boat_config, entries


def mailbox(root: Path, name: str) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        d = root / "data" / "mail" / name / sub
        if d.is_dir():
            out += [p.read_bytes() for p in sorted(d.iterdir())]
    return out


def record(start: float, link: str | None = "sat") -> CycleRecord:
    return CycleRecord(start=start, duration=60.0, result="done", link=link,
                       online_seconds=50.0, bytes_up=2000, bytes_down=1000,
                       messages_out=2, messages_in=1, cost=Decimal("1.25"),
                       users=(UserShare("skipper", 1500, 500, Decimal("1.25")),))


def test_daily_reports_once_a_day_the_cycles_since_the_last_report(tmp_path: Path) -> None:
    config = boat_config(tmp_path, 2525, "", user=None)
    text = config.path.read_text() + "\n[schedule]\nreport = daily\n"
    config.path.write_text(text)
    config = load_config(config.path)
    state = tmp_path / "data" / "state"
    state.mkdir(parents=True)
    ledger = Ledger(state / "cycles.jsonl")
    day1 = datetime(2026, 3, 2, 9, 0).astimezone().timestamp()
    first = record(day1)
    ledger.append(first)
    assert report_after_cycle(config, first, now=day1 + 60)
    (report,) = mailbox(tmp_path, "skipper")
    assert b"Subject: nosend cycle: done" in report and b"cost 1.25" in report
    # Later the same day: no second report.
    second = record(day1 + 3600)
    ledger.append(second)
    assert not report_after_cycle(config, second, now=day1 + 3660)
    # The first cycle of the next day reports what came since: the second cycle and it.
    third = record(day1 + 86400)
    ledger.append(third)
    assert report_after_cycle(config, third, now=day1 + 86460)
    reports = mailbox(tmp_path, "skipper")
    assert len(reports) == 2
    later = [r for r in reports if r != report][0]
    assert b"Subject: nosend cycles: 2" in later
    # Delivered locally: nothing was queued.
    assert entries(config) == []
    # A cycle that touched no link reports nothing.
    assert not report_after_cycle(config, record(day1 + 2 * 86400, link=None),
                                  now=day1 + 2 * 86400 + 60)
