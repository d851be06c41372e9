"""The exchange's side: wire meters watched live, transfer events turned into the
users' bytes and the progress line."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

import anyio
import pytest

from nosend_link.cycle import CycleResult, ExchangeCycle
from nosend_link.ledger import SHARED, UserShare
from nosend_link.online import ExchangeResult, OnlineLink, Tally
from nosend_link.plan import LinkPlan, Waiting
from nosend_link.progress import ProgressEvent, ProgressMeter, Transfer

try:  # the transport's own events, once this branch meets them
    from nosend_link.transfer_events import (  # type: ignore[import-not-found]
        BytesMoved,
        MessageDone,
        TransferFinished,
        TransferStarted,
    )
except ImportError:  # the same shapes, field for field, as they are defined there

    @dataclass(frozen=True, slots=True)
    class TransferStarted:  # type: ignore[no-redef]
        account: str
        direction: Literal["out", "in"]
        messages: int
        total_bytes: int

    @dataclass(frozen=True, slots=True)
    class BytesMoved:  # type: ignore[no-redef]
        account: str
        direction: Literal["out", "in"]
        message: int
        done_bytes: int
        message_bytes: int

    @dataclass(frozen=True, slots=True)
    class MessageDone:  # type: ignore[no-redef]
        account: str
        direction: Literal["out", "in"]
        message: int
        of: int
        size: int
        outcome: Literal["sent", "fetched", "held", "deferred", "refused", "deleted"]
        user: str | None = None

    @dataclass(frozen=True, slots=True)
    class TransferFinished:  # type: ignore[no-redef]
        account: str
        direction: Literal["out", "in"]
        ok: bool
        error: str | None = None


@dataclass
class Meter:
    """Shaped like the client runner's LinkMeter."""

    bytes_sent: int = 0
    bytes_received: int = 0


def test_watched_meters_are_read_live_and_counted_once() -> None:
    tally, meter = Tally(), Meter()
    tally.wire(up=10, down=20)
    tally.watch(meter)
    tally.watch(meter)
    meter.bytes_sent, meter.bytes_received = 1000, 2000
    assert (tally.bytes_up, tally.bytes_down) == (1010, 2020)
    other = Meter(5, 6)
    tally.watch(other)
    assert (tally.bytes_up, tally.bytes_down) == (1015, 2026)


def online_link(events: list[ProgressEvent]) -> OnlineLink:
    clock = iter(range(1000, 2000, 10))

    def monotonic() -> float:
        return float(next(clock))

    plan = LinkPlan("sat", rate=100.0)
    return OnlineLink(plan, None, Tally(), deadline=5000.0,
                      meter=ProgressMeter(plan, 990.0, 995.0, monotonic),
                      emit=events.append, monotonic=monotonic)


def test_transfer_events_become_user_bytes_and_progress() -> None:
    events: list[ProgressEvent] = []
    online = online_link(events)
    online.on_transfer(TransferStarted("smarthost", "out", 2, 3000))
    online.on_transfer(BytesMoved("smarthost", "out", 1, 500, 1000))
    online.on_transfer(MessageDone("smarthost", "out", 1, 2, 1000, "sent", "owner"))
    online.on_transfer(MessageDone("smarthost", "out", 2, 2, 2000, "deferred", "crew"))
    online.on_transfer(TransferFinished("smarthost", "out", False, "451 later"))
    online.on_transfer(TransferStarted("home", "in", 1, 700))
    online.on_transfer(MessageDone("home", "in", 1, 1, 700, "fetched", None))
    tally = online.tally
    assert (tally.messages_out, tally.messages_in) == (1, 1)
    assert tally.users == {"owner": (1000, 0), SHARED: (0, 700)}
    transfers = [e for e in events if isinstance(e, Transfer)]
    assert [(t.direction, t.index, t.count) for t in transfers] == [
        ("out", 0, 2), ("out", 1, 2), ("out", 1, 2), ("out", 2, 2), ("in", 0, 1), ("in", 1, 1)]
    # Bytes left: 3000 waiting, 500 of the first done, then the first, then both done.
    assert [t.left is not None and round(t.left * 100) for t in transfers[:4]] == [
        3000, 2500, 2000, 0]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_bytes_a_watched_meter_counted_before_max_online_are_billed(
    tmp_path: Path, anyio_backend: str
) -> None:
    link = LinkPlan("marina", max_online=0.5, cost_per_megabyte=Decimal("2"))
    meter = Meter()

    async def exchange(online: OnlineLink) -> ExchangeResult:
        online.tally.watch(meter)
        meter.bytes_sent, meter.bytes_received = 400_000, 100_000
        online.on_transfer(MessageDone("smarthost", "out", 1, 1, 300_000, "sent", "owner"))
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    outcome = await ExchangeCycle([link], tmp_path / "state", exchange).run(
        Waiting(sizes_out=(300_000,)))
    assert outcome.result is CycleResult.PARTLY and outcome.record is not None
    assert (outcome.record.bytes_up, outcome.record.bytes_down) == (400_000, 100_000)
    assert outcome.record.cost == Decimal("1.0000")
    assert outcome.record.users == (UserShare("owner", 300_000, 0, Decimal("1.0000")),)
