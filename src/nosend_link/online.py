"""The link while it is up, as the exchange sees it: what to count and how to report.

Owns: :class:`Tally` (bytes on the wire, messages and each local user's message bytes,
added to as the exchange goes), :class:`OnlineLink` (the plan, the probe that found the
link up, the time left, progress), :class:`ExchangeResult` and the :data:`Exchange`
signature. The cycle (:mod:`nosend_link.cycle`) makes them; the relay and the fetch use
them. Must not: run commands, speak a protocol or write the ledger.

Two ways in, both structural so that this module needs neither the runners nor the
transport:

- wire bytes: :meth:`Tally.watch` takes any meter with ``bytes_sent`` and
  ``bytes_received`` (``nosend_runners.client.connection.LinkMeter`` is one), read
  live, so bytes a connection moved before a cancellation are still billed; or the
  exchange calls :meth:`Tally.wire` itself;
- transfer events: :meth:`OnlineLink.on_transfer` is a progress callback for the
  relay's and the fetch's events (``nosend_link.transfer_events``: started, bytes
  moved, message done, finished). A message ``sent`` or ``fetched`` is added to its
  user's bytes (no user: :data:`~nosend_link.ledger.SHARED`), and each event becomes a
  :class:`~nosend_link.progress.Transfer` for the progress line.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from nosend_link.ledger import SHARED
from nosend_link.plan import LinkPlan
from nosend_link.probe import ProbeResult
from nosend_link.progress import ProgressEvent, ProgressMeter

__all__ = ["Exchange", "ExchangeResult", "OnlineLink", "Tally", "WireMeter"]


class WireMeter(Protocol):
    """Anything that counts bytes on the wire (``LinkMeter`` of the client runner)."""

    @property
    def bytes_sent(self) -> int:
        """Bytes we sent, protocol and TLS included."""
        ...

    @property
    def bytes_received(self) -> int:
        """Bytes we received, protocol and TLS included."""
        ...


@dataclass(slots=True)
class Tally:
    """What the exchange moved so far; it adds to this as it goes, so a cycle cut short
    (``max_online``, Ctrl-C) still records every byte that crossed the link.

    :attr:`bytes_up`/:attr:`bytes_down`: on the wire, protocol included (what
    :meth:`wire` added plus what the watched meters count). Per user: the message bytes
    of each local sender (what went out) and recipient (what came in); the cost is
    divided among users by these.
    """

    messages_out: int = 0
    messages_in: int = 0
    users: dict[str, tuple[int, int]] = field(default_factory=dict)
    _up: int = 0
    _down: int = 0
    _meters: list[WireMeter] = field(default_factory=list)

    @property
    def bytes_up(self) -> int:
        """Bytes sent on the wire so far."""
        return self._up + sum(m.bytes_sent for m in self._meters)

    @property
    def bytes_down(self) -> int:
        """Bytes received on the wire so far."""
        return self._down + sum(m.bytes_received for m in self._meters)

    def wire(self, up: int = 0, down: int = 0) -> None:
        """Count bytes that crossed the link."""
        self._up += up
        self._down += down

    def watch(self, meter: WireMeter) -> None:
        """Count what ``meter`` counts, now and later (a connection's meter, attached
        when it opens). A meter watched twice is counted once."""
        if not any(m is meter for m in self._meters):
            self._meters.append(meter)

    def sent(self, user: str, nbytes: int) -> None:
        """A message of ``nbytes`` from local ``user`` was accepted upstream."""
        out, inn = self.users.get(user, (0, 0))
        self.users[user] = (out + nbytes, inn)
        self.messages_out += 1

    def received(self, user: str, nbytes: int) -> None:
        """A message of ``nbytes`` for local ``user`` was fetched and delivered."""
        out, inn = self.users.get(user, (0, 0))
        self.users[user] = (out, inn + nbytes)
        self.messages_in += 1


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """What the exchange says when it returns: ``complete`` if everything that was to go
    went and every account was fetched; ``error`` (no secrets) says what did not."""

    complete: bool
    error: str | None = None


# The transfer events, by shape (see the module docstring).

@runtime_checkable
class _Started(Protocol):
    account: str
    direction: Literal["out", "in"]
    messages: int
    total_bytes: int


@runtime_checkable
class _Moved(Protocol):
    account: str
    direction: Literal["out", "in"]
    message: int
    done_bytes: int
    message_bytes: int


@runtime_checkable
class _Done(Protocol):
    account: str
    direction: Literal["out", "in"]
    message: int
    of: int
    size: int
    outcome: str
    user: str | None


class OnlineLink:
    """The link handed to the exchange while it is up: its ``plan``, the ``probe`` that
    found it up (None if none ran), the :class:`Tally` to add to, and progress."""

    __slots__ = ("plan", "probe", "tally", "_deadline", "_meter", "_emit", "_monotonic",
                 "_transfers")

    def __init__(
        self,
        plan: LinkPlan,
        probe: ProbeResult | None,
        tally: Tally,
        *,
        deadline: float,
        meter: ProgressMeter,
        emit: Callable[[ProgressEvent], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.probe = probe
        self.tally = tally
        self._deadline = deadline
        self._meter = meter
        self._emit = emit
        self._monotonic = monotonic
        # (account, direction) -> [messages, total bytes, bytes of finished messages]
        self._transfers: dict[tuple[str, str], list[int]] = {}

    @property
    def seconds_left(self) -> float:
        """Seconds until ``max_online`` or the end of the link's hours hangs up (so a
        message that cannot make it in time can be left for the next cycle rather than
        cut and sent again)."""
        return max(0.0, self._deadline - self._monotonic())

    def report(
        self,
        direction: Literal["out", "in"],
        index: int,
        count: int,
        bytes_left: int | None = None,
    ) -> None:
        """Tell the user where the exchange is: message ``index`` of ``count``."""
        self._emit(self._meter.transfer(direction, index, count, self.tally.bytes_up,
                                        self.tally.bytes_down, bytes_left))

    def on_transfer(self, event: object) -> None:
        """A progress callback for the relay's and the fetch's transfer events."""
        if isinstance(event, _Started):
            self._transfers[(event.account, event.direction)] = [
                event.messages, event.total_bytes, 0]
            self.report(event.direction, 0, event.messages, self._bytes_left())
        elif isinstance(event, _Moved):
            state = self._transfers.get((event.account, event.direction))
            count = state[0] if state else event.message
            self.report(event.direction, event.message, count,
                        self._bytes_left() - event.done_bytes)
        elif isinstance(event, _Done):
            user = event.user if event.user is not None else SHARED
            if event.outcome == "sent":
                self.tally.sent(user, event.size)
            elif event.outcome == "fetched":
                self.tally.received(user, event.size)
            state = self._transfers.get((event.account, event.direction))
            if state is not None:
                state[2] += event.size
            self.report(event.direction, event.message, event.of, self._bytes_left())

    def _bytes_left(self) -> int:
        return max(0, sum(total - done for _, total, done in self._transfers.values()))


#: The exchange: relay the queue and fetch the accounts over the link, adding to its
#: tally as it goes. Cancelled at ``max_online``; must not swallow cancellation.
Exchange = Callable[[OnlineLink], Awaitable[ExchangeResult]]
