"""What a person watching a cycle sees: progress events and two ways to show them.

Owns: the events a cycle emits through its ``progress`` callback --
:class:`LinkState` (a link dialling, probing, online, hanging up, down or failed),
:class:`Transfer` (message n of N, bytes, rate, time and cost so far, time left) and
:class:`CycleEnded` -- the :class:`ProgressMeter` that turns the exchange's counters
into a :class:`Transfer`, and two renderers: :class:`TerminalRenderer` (one line
rewritten in place, for ``nosend send`` at a terminal) and :class:`LogRenderer` (a log
line per state and per message, never per chunk, for ``serve`` and cron).

Must not: touch the link, the queue or the ledger. A renderer's failure (a closed
terminal) must not break a cycle: the cycle calls the callback and moves on; the
renderers here never raise on a closed stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TextIO

from nosend_link import _format
from nosend_link.plan import LinkPlan

__all__ = [
    "CycleEnded",
    "LinkState",
    "LogRenderer",
    "ProgressEvent",
    "ProgressMeter",
    "TerminalRenderer",
    "Transfer",
]

State = Literal["dialling", "probing", "online", "hanging up", "down", "failed"]


@dataclass(frozen=True, slots=True)
class LinkState:
    """``link`` entered ``state``; ``detail`` says more (an error, a banner)."""

    link: str
    state: State
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Where the exchange stands: ``direction`` ``out`` (sending) or ``in`` (fetching),
    message ``index`` of ``count`` (1-based), the bytes on the wire each way since the
    link came up, the ``elapsed`` seconds online, the ``rate`` in bytes per second, the
    ``cost`` so far and the seconds ``left`` (None if unknown)."""

    link: str
    direction: Literal["out", "in"]
    index: int
    count: int
    bytes_up: int
    bytes_down: int
    elapsed: float
    rate: float
    cost: Decimal
    left: float | None


@dataclass(frozen=True, slots=True)
class CycleEnded:
    """The cycle is over: its result value and a one-line summary."""

    result: str
    summary: str


ProgressEvent = LinkState | Transfer | CycleEnded


class ProgressMeter:
    """Builds :class:`Transfer` events for one link from the exchange's counters.

    ``online_since`` (a ``monotonic`` reading) is when ``up`` started: the bill runs
    from then. The rate counts from ``transfer_since`` (when the probe answered), so
    the dialling time does not drag it down.
    """

    __slots__ = ("_plan", "_online_since", "_transfer_since", "_monotonic")

    def __init__(
        self,
        plan: LinkPlan,
        online_since: float,
        transfer_since: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plan = plan
        self._online_since = online_since
        self._transfer_since = transfer_since
        self._monotonic = monotonic

    def transfer(
        self,
        direction: Literal["out", "in"],
        index: int,
        count: int,
        bytes_up: int,
        bytes_down: int,
        bytes_left: int | None = None,
    ) -> Transfer:
        """The event for message ``index`` of ``count`` with the counters so far;
        ``bytes_left`` (if known) gives the time left at the rate measured, or at the
        link's nominal rate before anything was measured."""
        now = self._monotonic()
        moved = bytes_up + bytes_down
        busy = now - self._transfer_since
        rate = moved / busy if busy > 0 and moved else 0.0
        left = None
        if bytes_left is not None:
            left = bytes_left / (rate or self._plan.rate)
        elapsed = now - self._online_since
        return Transfer(self._plan.name, direction, index, count, bytes_up, bytes_down,
                        elapsed, rate, self._plan.cost(elapsed, moved), left)


def _describe(event: ProgressEvent) -> str:
    if isinstance(event, LinkState):
        text = f"{event.link} {event.state}"
        return f"{text}: {event.detail}" if event.detail else text
    if isinstance(event, Transfer):
        parts = [
            f"{event.link} {event.direction} {event.index}/{event.count}",
            f"{_format.size(event.bytes_up)} up {_format.size(event.bytes_down)} down",
            _format.rate(event.rate),
            _format.duration(event.elapsed),
            _format.money(event.cost),
        ]
        if event.left is not None:
            parts.append(f"~{_format.duration(event.left)} left")
        return " | ".join(parts)
    return f"cycle {event.result}: {event.summary}"


class TerminalRenderer:
    """One status line rewritten in place (carriage return, no escape codes); a state
    that ends something (down, failed, the cycle's end) closes the line.

    Transfers come faster than a person reads: one is drawn at most every
    ``min_interval`` seconds, unless it starts a new message.
    """

    __slots__ = ("_out", "_width", "_min_interval", "_monotonic", "_shown", "_last_draw",
                 "_last_message")

    def __init__(
        self,
        out: TextIO,
        *,
        width: int = 79,
        min_interval: float = 0.25,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._width = width
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._shown = 0
        self._last_draw: float | None = None
        self._last_message: tuple[str, int] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        """Draw ``event``."""
        if isinstance(event, Transfer):
            now = self._monotonic()
            message = (event.direction, event.index)
            recent = self._last_draw is not None and now - self._last_draw < self._min_interval
            if recent and message == self._last_message:
                return
            self._last_draw, self._last_message = now, message
        line = _describe(event)[: self._width]
        ends = isinstance(event, CycleEnded) or (
            isinstance(event, LinkState) and event.state in ("down", "failed"))
        pad = " " * max(0, self._shown - len(line))
        self._write("\r" + line + pad + ("\n" if ends else ""))
        self._shown = 0 if ends else len(line)

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError):
            pass  # the terminal went away; the cycle goes on


class LogRenderer:
    """A log line per link state, per message started and at the end; ``log`` takes a
    line (e.g. ``logger.info``)."""

    __slots__ = ("_log", "_last_message")

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._last_message: tuple[str, str, int] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        """Log ``event`` unless it is a further transfer within the same message."""
        if isinstance(event, Transfer):
            message = (event.link, event.direction, event.index)
            if message == self._last_message:
                return
            self._last_message = message
        self._log(_describe(event))
