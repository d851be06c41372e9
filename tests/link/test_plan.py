"""Link plans: the value parsers (hours, budget, probe address) and the cost formula."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nosend_link.plan import (
    DEFAULT_RATE,
    Budget,
    Endpoint,
    Hours,
    LinkPlan,
    PlanError,
    Waiting,
    cost_of,
)
from nosend_store.config import Link


def at(hour: int, minute: int = 0, day: int = 7) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def test_cost_is_minutes_times_rate_plus_megabytes_times_rate_exactly() -> None:
    # 90 s at 1.50/min = 2.25; 250,000 bytes at 8.00/MB = 2.00.
    assert cost_of(90.0, 250_000, Decimal("1.50"), Decimal("8.00")) == Decimal("4.2500")
    # Clock noise below a millisecond does not change a bill.
    assert cost_of(60.0000004, 0, Decimal("1.2"), Decimal(0)) == Decimal("1.2000")
    # One third of a cent rounds half up at the fourth decimal.
    assert cost_of(1.0, 0, Decimal("0.01"), Decimal(0)) == Decimal("0.0002")


def test_hours_windows_including_one_past_midnight() -> None:
    hours = Hours.parse("06:00-08:30, 22:00-01:00")
    assert hours.windows == ((360, 510), (1320, 60))
    assert hours.allows(at(6)) and hours.allows(at(8, 29)) and not hours.allows(at(8, 30))
    assert hours.allows(at(23, 59)) and hours.allows(at(0, 30)) and not hours.allows(at(1))
    assert hours.next_allowed(at(12)) == at(22)
    assert hours.next_allowed(at(1, 15)) == at(6)
    assert hours.next_allowed(at(7)) == at(7)
    assert Hours.parse("").always and Hours.parse("always").allows(at(3))
    assert Hours.parse("00:00-24:00").always


@pytest.mark.parametrize("bad", ["6-8", "06:00", "25:00-26:00", "06:60-07:00", "x"])
def test_hours_refuses_what_is_not_a_window(bad: str) -> None:
    with pytest.raises(PlanError):
        Hours.parse(bad)


def test_budget_in_money_or_megabytes() -> None:
    assert Budget.parse("120.50") == Budget(Decimal("120.50"), "money")
    assert Budget.parse("500 MB") == Budget(Decimal(500), "MB")
    assert Budget.parse("2GB") == Budget(Decimal(2000), "MB")
    with pytest.raises(PlanError):
        Budget.parse("12 minutes")
    money = Budget(Decimal("10"))
    assert not money.exhausted(Decimal("9.9999"), 10**12) and money.exhausted(Decimal(10), 0)
    volume = Budget(Decimal(1), "MB")
    assert not volume.exhausted(Decimal(999), 999_999) and volume.exhausted(Decimal(0), 10**6)


def test_endpoint_parse() -> None:
    assert Endpoint.parse("mail.example.net:587") == Endpoint("mail.example.net", 587)
    assert Endpoint.parse("[2001:db8::1]:25") == Endpoint("2001:db8::1", 25)
    assert str(Endpoint("2001:db8::1", 25)) == "[2001:db8::1]:25"
    for bad in ("host", "host:0", "host:70000", "a b:25"):
        with pytest.raises(PlanError):
            Endpoint.parse(bad)


def test_plan_from_a_config_link_takes_its_keys_and_the_extra_ones() -> None:
    link = Link(name="iridium", up=("pon", "iridium"), down=("poff", "iridium"), priority=30,
                cost_per_minute=Decimal("1.35"), cost_per_megabyte=Decimal(0),
                up_timeout=90.0, max_online=600.0, accounts=("home",))
    plan = LinkPlan.from_link(link, probe=Endpoint("smtp.example", 587), max_size=50_000)
    assert (plan.name, plan.up, plan.down, plan.priority) == (
        "iridium", ("pon", "iridium"), ("poff", "iridium"), 30)
    assert plan.cost_per_minute == Decimal("1.35") and plan.max_online == 600.0
    assert plan.rate == DEFAULT_RATE and plan.setup_seconds == 20.0 and plan.dialled
    assert plan.carries(50_000) and not plan.carries(50_001)
    assert plan.fetches("home") and not plan.fetches("work")
    always = LinkPlan.from_link(Link(name="marina"))
    assert always.setup_seconds == 0.0 and not always.dialled and always.fetches("work")


def test_waiting_has_work_when_mail_or_accounts_wait() -> None:
    assert not Waiting().has_work
    assert Waiting(sizes_out=(10,)).has_work and Waiting(accounts=("a",)).has_work


def test_the_end_of_the_window_in_force() -> None:
    hours = Hours.parse("06:00-08:30, 22:00-01:00")
    assert hours.window_end(at(7, 15)) == at(8, 30)
    assert hours.window_end(at(23, 10)) == at(1, day=8)
    assert hours.window_end(at(0, 30)) == at(1)
    assert hours.window_end(at(12)) is None and Hours().window_end(at(12)) is None
    # Adjoining windows are one: the link stays usable across the seam.
    assert Hours.parse("20:00-23:00, 23:00-02:00").window_end(at(21)) == at(2, day=8)
    assert Hours.parse("00:00-12:00, 12:00-00:00").window_end(at(21)) is None


_minutes = st.integers(min_value=0, max_value=1439)


@given(st.lists(st.tuples(_minutes, _minutes).filter(lambda w: w[0] != w[1]), min_size=1,
                max_size=3), _minutes)
def test_next_allowed_is_the_first_allowed_minute(
    windows: list[tuple[int, int]], minute: int
) -> None:
    hours = Hours(tuple(windows))
    now = at(0) + timedelta(minutes=minute)
    found = hours.next_allowed(now)
    assert found >= now and hours.allows(found)
    t = now
    while t < found:  # no allowed minute is skipped
        assert not hours.allows(t)
        t += timedelta(minutes=1)
    end = hours.window_end(found)
    if end is None:  # the windows cover the whole day
        assert all(hours.allows(at(0) + timedelta(minutes=m)) for m in range(1440))
    else:
        assert end > found and not hours.allows(end)
        t = found
        while t < end:  # allowed all the way from the start to the end
            assert hours.allows(t)
            t += timedelta(minutes=1)
