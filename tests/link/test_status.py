"""nosend status: the month per link (with budget left) and per user."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from nosend_link.ledger import SHARED, LinkTotals, MonthTotals, UserTotals
from nosend_link.plan import Budget, LinkPlan
from nosend_link.status import LinkStatus, link_status, status_lines

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)

MONTH = MonthTotals(2026, 12, links={
    "iridium": LinkTotals(4, 600.0, 200_000, 300_000, Decimal("15.0000")),
    "vsat": LinkTotals(2, 100.0, 3_000_000, 4_000_000, Decimal("0")),
    "old": LinkTotals(1, 60.0, 10, 10, Decimal("1.0000")),
}, users={
    "owner": UserTotals(150_000, 50_000, Decimal("6.0000")),
    "crew": UserTotals(50_000, 250_000, Decimal("9.0000")),
    SHARED: UserTotals(0, 0, Decimal("1.0000")),
})

PLANS = (
    LinkPlan("iridium", budget=Budget(Decimal("20"))),
    LinkPlan("vsat", budget=Budget(Decimal("5"), "MB")),
    LinkPlan("gsm", enabled=False),
)


def test_each_link_with_its_budget_left() -> None:
    status = {s.name: s for s in link_status(PLANS, MONTH, NOW)}
    assert list(status) == ["gsm", "iridium", "old", "vsat"]
    assert status["iridium"].left == Decimal("5.0000") and status["iridium"].unusable is None
    assert status["vsat"].left == Decimal(0)
    assert status["vsat"].unusable == "monthly budget 5 MB spent"
    assert status["gsm"] == LinkStatus("gsm", LinkTotals(), None, None, "disabled")
    assert status["old"].unusable == "not in mail.cfg"


def test_status_lines_for_a_person() -> None:
    assert status_lines(PLANS, MONTH, NOW) == [
        "2026-12: 16.00 in all",
        "  link gsm: 0 cycle(s), 0 s online, 0 B, 0.00 (disabled)",
        "  link iridium: 4 cycle(s), 10 min 00 s online, 500.0 kB, 15.00, 5.00 of 20 left",
        "  link old: 1 cycle(s), 1 min 00 s online, 20 B, 1.00 (not in mail.cfg)",
        "  link vsat: 2 cycle(s), 1 min 40 s online, 7.00 MB, 0.00, 0 of 5 MB left "
        "(monthly budget 5 MB spent)",
        "  user *: 0 B sent, 0 B received, 1.00",
        "  user crew: 50.0 kB sent, 250.0 kB received, 9.00",
        "  user owner: 150.0 kB sent, 50.0 kB received, 6.00",
    ]
