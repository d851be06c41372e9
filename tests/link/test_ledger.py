"""The cycle ledger: durable whole records, a torn tail skipped and cut, exact money,
the bill split among users and the month's totals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nosend_link.ledger import (
    SHARED,
    Attempt,
    CycleRecord,
    Ledger,
    LinkTotals,
    UserShare,
    UserTotals,
    month_totals,
    split_cost,
)


def ts(day: int, hour: int = 12, month: int = 12) -> float:
    return datetime(2026, month, day, hour, tzinfo=UTC).timestamp()


def record(**kw: object) -> CycleRecord:
    base: dict[str, object] = dict(start=ts(7), duration=95.5, result="done", link="iridium",
                                   online_seconds=90.0, bytes_up=120_000, bytes_down=130_000,
                                   messages_out=2, messages_in=3, cost=Decimal("2.2500"))
    base.update(kw)
    return CycleRecord(**base)  # type: ignore[arg-type]


def test_a_record_comes_back_exactly(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "cycles.jsonl")
    assert list(ledger.records()) == []
    rec = record(
        error="smtp.example.net: 451 try later",
        attempts=(Attempt("gsm", 31.25, Decimal("0.1563"), "up: exit status 1"),),
        users=(UserShare("owner", 100_000, 0, Decimal("1.0000")),
               UserShare("crew", 20_000, 130_000, Decimal("1.2500"))),
    )
    ledger.append(rec)
    ledger.append(record(result="nothing", link=None, cost=Decimal(0)))
    back = list(ledger.records())
    assert back[0] == rec and back[1].result == "nothing" and back[1].link is None
    assert back[0].cost == Decimal("2.2500") and str(back[0].cost) == "2.2500"
    # Money never passes through a float on disk.
    assert b'"cost":"2.2500"' in (tmp_path / "cycles.jsonl").read_bytes()


def test_a_torn_last_line_is_skipped_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "cycles.jsonl"
    ledger = Ledger(path)
    ledger.append(record())
    whole = path.read_bytes()
    torn = record(link="gsm").to_line()[:40]  # a crash in the middle of a write
    path.write_bytes(whole + torn)
    assert [r.link for r in ledger.records()] == ["iridium"]
    ledger.append(record(link="vsat"))
    assert [r.link for r in ledger.records()] == ["iridium", "vsat"]
    assert path.read_bytes() == whole + record(link="vsat").to_line()


def test_a_torn_line_and_nothing_else_is_cut_to_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "cycles.jsonl"
    path.write_bytes(b'{"start":"2026-12-')
    Ledger(path).append(record())
    assert path.read_bytes() == record().to_line()


def test_an_unreadable_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "cycles.jsonl"
    path.write_bytes(record(link="a").to_line() + b"not json\n{}\n" + record(link="b").to_line())
    assert [r.link for r in Ledger(path).records()] == ["a", "b"]


def test_the_bill_is_split_by_bytes_and_adds_up_exactly() -> None:
    shares = split_cost(Decimal("1.0000"), {"owner": (2, 0), "captain": (0, 1), "crew": (0, 0)})
    assert shares == (
        UserShare("captain", 0, 1, Decimal("0.3333")),
        UserShare("crew", 0, 0, Decimal("0.0000")),
        UserShare("owner", 2, 0, Decimal("0.6667")),
    )
    three = split_cost(Decimal("0.0100"), {"a": (1, 0), "b": (1, 0), "c": (1, 0)})
    # 100 quanta over three equal users: the leftover quantum goes to the first name.
    assert [s.cost for s in three] == [Decimal("0.0034"), Decimal("0.0033"), Decimal("0.0033")]


def test_cost_no_user_caused_is_shared() -> None:
    assert split_cost(Decimal("0.5000"), {}) == (UserShare(SHARED, cost=Decimal("0.5000")),)
    assert split_cost(Decimal(0), {}) == ()


@given(
    st.integers(min_value=0, max_value=10**9),
    st.dictionaries(st.text(min_size=1, max_size=5),
                    st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)), max_size=6),
)
def test_shares_always_add_up_to_the_cost(quanta: int, traffic: dict[str, tuple[int, int]]) -> None:
    cost = quanta * Decimal("0.0001")
    shares = split_cost(cost, traffic)
    assert sum((s.cost for s in shares), Decimal(0)) == cost
    assert all(s.cost >= 0 for s in shares)


def test_month_totals_per_link_and_per_user() -> None:
    records = [
        record(start=ts(1, 0), users=(UserShare("owner", 120_000, 0, Decimal("1.0000")),
                                      UserShare("crew", 0, 130_000, Decimal("1.2500")))),
        record(start=ts(31, 23), link="gsm", online_seconds=60.0, bytes_up=10, bytes_down=20,
               cost=Decimal("0.1000"), users=(UserShare("crew", 10, 20, Decimal("0.1000")),),
               attempts=(Attempt("iridium", 30.0, Decimal("0.7500"), "up: exit status 1"),)),
        record(start=ts(30, 12, month=11), cost=Decimal("99")),  # last month
        record(start=ts(2), link=None, result="link failed", cost=Decimal(0), online_seconds=0,
               bytes_up=0, bytes_down=0,
               attempts=(Attempt("gsm", 10.0, Decimal("0.0500"), "probe: no banner"),)),
    ]
    totals = month_totals(records, 2026, 12, UTC)
    assert totals.links == {
        "iridium": LinkTotals(1, 120.0, 120_000, 130_000, Decimal("3.0000")),
        "gsm": LinkTotals(1, 70.0, 10, 20, Decimal("0.1500")),
    }
    assert totals.links["iridium"].bytes == 250_000
    assert totals.users == {
        "owner": UserTotals(120_000, 0, Decimal("1.0000")),
        "crew": UserTotals(10, 130_020, Decimal("1.3500")),
        SHARED: UserTotals(0, 0, Decimal("0.8000")),
    }
    assert totals.cost == Decimal("3.1500")
    assert month_totals(records, 2026, 11, UTC).cost == Decimal("99")
