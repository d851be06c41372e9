"""Link choice: by priority, by least cost, the link in use; hours, budget and max_size;
estimates and the dry run."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from nosend_link import _format
from nosend_link.choice import AUTO, COST, Excluded, choose, dry_run, estimate
from nosend_link.ledger import LinkTotals
from nosend_link.plan import Budget, Hours, LinkPlan, Waiting

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

IRIDIUM = LinkPlan("iridium", up=("pon", "iridium"), priority=30,
                   cost_per_minute=Decimal("1.50"), rate=300.0, setup_seconds=20.0)
GSM = LinkPlan("gsm", up=("pon", "gsm"), priority=20, cost_per_megabyte=Decimal("10"),
               rate=5000.0, setup_seconds=10.0, max_size=100_000)
MARINA = LinkPlan("marina", priority=10, rate=100_000.0, setup_seconds=0.0,
                  hours=Hours.parse("08:00-11:00"))
LINKS = (IRIDIUM, GSM, MARINA)

WAITING = Waiting(sizes_out=(30_000, 60_000, 150_000), accounts=("home", "work"))


def test_estimate_is_setup_plus_bytes_over_rate_and_its_cost() -> None:
    e = estimate(IRIDIUM, WAITING)
    assert (e.messages, e.held, e.bytes) == (3, 0, 240_000)
    assert e.seconds == 20.0 + 240_000 / 300.0  # 820 s
    assert e.cost == Decimal("20.5000")  # 820 s = 13.6667 min x 1.50
    g = estimate(GSM, WAITING)
    assert (g.messages, g.held, g.bytes) == (2, 1, 90_000)  # the 150 kB one is held back
    assert g.cost == Decimal("0.9000")  # 0.09 MB x 10


def test_expected_incoming_bytes_count_only_where_accounts_are_fetched() -> None:
    only_home = LinkPlan("sat", accounts=("home",), rate=1000.0, setup_seconds=0.0)
    none_here = LinkPlan("sat2", accounts=("other",), rate=1000.0, setup_seconds=0.0)
    waiting = Waiting(bytes_in=5000, accounts=("home",))
    assert estimate(only_home, waiting).bytes == 5000
    assert estimate(only_home, waiting).accounts == ("home",)
    assert estimate(none_here, waiting).bytes == 0


def test_auto_goes_by_priority_and_leaves_out_a_link_outside_its_hours() -> None:
    choice = choose(LINKS, WAITING, mode=AUTO, now=NOON)
    assert [e.plan.name for e in choice.order] == ["gsm", "iridium"]
    assert choice.excluded == (Excluded("marina", "outside its hours (next 08:00)"),)
    morning = choose(LINKS, WAITING, mode=AUTO, now=NOON.replace(hour=9))
    assert [e.plan.name for e in morning.order] == ["marina", "gsm", "iridium"]


def test_cost_goes_by_the_least_estimated_cost() -> None:
    choice = choose(LINKS, WAITING, mode=COST, now=NOON.replace(hour=9))
    assert [(e.plan.name, e.cost) for e in choice.order] == [
        ("marina", Decimal("0.0000")), ("gsm", Decimal("0.9000")),
        ("iridium", Decimal("20.5000"))]
    # Per-MB is dearer than per-minute for a big batch on a fast link.
    big = Waiting(sizes_out=(90_000,) * 20)
    pricey_mb = LinkPlan("vsat", cost_per_megabyte=Decimal("20"), rate=50_000.0)
    cheap_min = LinkPlan("fbb", cost_per_minute=Decimal("2"), rate=50_000.0, priority=200)
    order = choose((pricey_mb, cheap_min), big, mode=COST, now=NOON).order
    assert [e.plan.name for e in order] == ["fbb", "vsat"]


def test_the_link_in_use_is_the_only_one_tried() -> None:
    choice = choose(LINKS, WAITING, mode="iridium", now=NOON)
    assert [e.plan.name for e in choice.order] == ["iridium"] and choice.excluded == ()
    outside = choose(LINKS, WAITING, mode="marina", now=NOON)
    assert outside.order == () and outside.excluded[0].link == "marina"
    assert choose(LINKS, WAITING, mode="nope", now=NOON).excluded == (
        Excluded("nope", "no such link"),)


def test_a_link_whose_budget_is_spent_or_disabled_is_left_out() -> None:
    money = LinkPlan("iridium", priority=1, budget=Budget(Decimal("100")))
    volume = LinkPlan("vsat", priority=2, budget=Budget(Decimal("5"), "MB"))
    off = LinkPlan("old", priority=3, enabled=False)
    spent = {"iridium": LinkTotals(cost=Decimal("100.0000")),
             "vsat": LinkTotals(bytes_up=4_000_000, bytes_down=999_999)}
    choice = choose((money, volume, off), WAITING, now=NOON, spent=spent)
    assert [e.plan.name for e in choice.order] == ["vsat"]
    assert choice.excluded == (Excluded("iridium", "monthly budget 100 spent"),
                               Excluded("old", "disabled"))
    spent["vsat"] = LinkTotals(bytes_up=5_000_000)
    assert choose((volume,), WAITING, now=NOON, spent=spent).excluded == (
        Excluded("vsat", "monthly budget 5 MB spent"),)


def test_dry_run_says_which_link_how_long_and_how_much() -> None:
    run = dry_run(LINKS, WAITING, mode=AUTO, now=NOON)
    assert run.link is not None and run.link.plan.name == "gsm"
    assert run.lines() == [
        "waiting: 3 message(s), 240.0 kB; 2 account(s) to fetch",
        "would use gsm: 2 message(s) (1 held back by max_size), 2 account(s), 90.0 kB, "
        "about 28 s, about 0.90",
        "  then iridium: 3 message(s), 2 account(s), 240.0 kB, about 13 min 40 s, "
        "about 20.50",
        "  not marina: outside its hours (next 08:00)",
    ]


def test_dry_run_with_nothing_waiting_or_no_usable_link() -> None:
    idle = dry_run(LINKS, Waiting(), now=NOON)
    assert idle.nothing_to_do and idle.link is None
    assert idle.lines()[-1] == "nothing to do: no link would be used"
    blocked = dry_run((MARINA,), WAITING, now=NOON)
    assert blocked.link is None and "no link may be used now" in blocked.lines()


def test_formatting_for_people() -> None:
    assert [_format.size(n) for n in (999, 1000, 123_456, 4_560_000, 1.2e9)] == [
        "999 B", "1.0 kB", "123.5 kB", "4.56 MB", "1.20 GB"]
    assert [_format.duration(s) for s in (44.6, 185, 3720)] == ["45 s", "3 min 05 s",
                                                                 "1 h 02 min"]
    assert _format.money(Decimal("20.5050")) == "20.51" and _format.rate(300) == "300 B/s"


def test_a_link_that_would_carry_nothing_is_not_dialled() -> None:
    small = LinkPlan("iridium", max_size=50_000, accounts=("home",))
    big_only = Waiting(sizes_out=(2_000_000,))
    choice = choose((small, GSM), big_only, now=NOON)
    assert choice.order == ()
    assert choice.excluded == (
        Excluded("iridium", "carries nothing that waits (max_size, accounts)"),
        Excluded("gsm", "carries nothing that waits (max_size, accounts)"),
    )
    # An account it fetches is reason enough to dial.
    with_fetch = Waiting(sizes_out=(2_000_000,), accounts=("home",))
    assert [e.plan.name for e in choose((small,), with_fetch, now=NOON).order] == ["iridium"]
