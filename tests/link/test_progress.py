"""Progress: the meter's arithmetic with a fake clock, the one-line terminal renderer
and the log renderer."""

from __future__ import annotations

import io
from decimal import Decimal

from nosend_link.plan import LinkPlan
from nosend_link.progress import (
    CycleEnded,
    LinkState,
    LogRenderer,
    ProgressMeter,
    TerminalRenderer,
    Transfer,
)

IRIDIUM = LinkPlan("iridium", cost_per_minute=Decimal("1.50"), rate=300.0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_meter_reports_rate_cost_and_time_left() -> None:
    clock = FakeClock()
    meter = ProgressMeter(IRIDIUM, online_since=1000.0, transfer_since=1020.0,
                          monotonic=clock)
    clock.now = 1020.0
    first = meter.transfer("out", 1, 4, 0, 0, bytes_left=6000)
    assert first.rate == 0.0 and first.left == 20.0  # nothing measured yet: nominal rate
    clock.now = 1060.0  # 40 s after the probe, 60 s online
    t = meter.transfer("out", 2, 4, 10_000, 2_000, bytes_left=9_000)
    assert t == Transfer("iridium", "out", 2, 4, 10_000, 2_000, 60.0, 300.0,
                         Decimal("1.5000"), 30.0)


def transfer(index: int, up: int) -> Transfer:
    return Transfer("iridium", "out", index, 3, up, 100, 65.0, 312.5, Decimal("1.6250"),
                    100.0)


def test_the_terminal_line_is_rewritten_in_place_and_closed_at_the_end() -> None:
    out, clock = io.StringIO(), FakeClock()
    render = TerminalRenderer(out, monotonic=clock)
    render(LinkState("iridium", "dialling"))
    render(transfer(1, 20_000))
    clock.now += 0.1
    render(transfer(1, 21_000))  # too soon, same message: not drawn
    render(transfer(2, 22_000))  # a new message is always drawn
    render(LinkState("iridium", "down"))
    render(CycleEnded("done", "2 sent, 0 fetched"))
    line1 = ("iridium out 1/3 | 20.0 kB up 100 B down | 312 B/s | 1 min 05 s | 1.63"
             " | ~1 min 40 s left")
    line2 = line1.replace("out 1/3", "out 2/3").replace("20.0 kB", "22.0 kB")
    assert out.getvalue() == (
        "\riridium dialling"
        + "\r" + line1[:79]
        + "\r" + line2[:79]
        + "\riridium down" + " " * (79 - len("iridium down")) + "\n"
        + "\rcycle done: 2 sent, 0 fetched\n"
    )


def test_a_closed_terminal_does_not_break_the_cycle() -> None:
    out = io.StringIO()
    out.close()
    TerminalRenderer(out)(LinkState("gsm", "failed", "up: exit status 1"))


def test_the_log_gets_a_line_per_state_and_per_message() -> None:
    lines: list[str] = []
    render = LogRenderer(lines.append)
    render(LinkState("gsm", "failed", "up: exit status 1"))
    render(transfer(1, 10))
    render(transfer(1, 20))
    render(transfer(2, 30))
    render(CycleEnded("partly", "1 message left"))
    assert lines == [
        "gsm failed: up: exit status 1",
        "iridium out 1/3 | 10 B up 100 B down | 312 B/s | 1 min 05 s | 1.63 | ~1 min 40 s left",
        "iridium out 2/3 | 30 B up 100 B down | 312 B/s | 1 min 05 s | 1.63 | ~1 min 40 s left",
        "cycle partly: 1 message left",
    ]
