"""What the link layer knows about one link, and what waits to cross it.

Owns: :class:`LinkPlan` (a ``[link NAME]`` section plus the keys the link layer needs
that ``nosend_store.config.Link`` does not hold yet: ``probe``, ``max_size``, ``hours``,
``budget``, ``rate``, ``setup_seconds``), the value types :class:`Hours`,
:class:`Budget`, :class:`Endpoint` and :class:`Waiting`, their small parsers, and the
one cost formula (:func:`cost_of`) that estimates, the ledger and the budget all use.

Must not: read ``mail.cfg`` or any file, start processes, or know the clock. The caller
builds plans from the configuration (:meth:`LinkPlan.from_link` plus the extra values)
and passes them in, so the configuration can change shape without touching this layer.

Units, decided once here:

- money is a :class:`~decimal.Decimal` in the link's own currency; costs are rounded to
  :data:`COST_QUANTUM` (a hundredth of a cent) with ROUND_HALF_UP, like a bill;
- a megabyte is 1,000,000 bytes (:data:`BYTES_PER_MEGABYTE`), as airtime plans count;
- a link's ``rate`` is in bytes per second on the wire. The default,
  :data:`DEFAULT_RATE` = 300 B/s, is 2,400 bit/s: what an Iridium circuit carries, the
  slowest link nosend is built for. An unknown link is thus assumed slow and dear, which
  errs toward a higher estimate -- the safe side for a least-cost choice and a budget;
- ``setup_seconds`` is the time a link takes to come up before a byte moves. Default:
  :data:`DEFAULT_SETUP_SECONDS` = 20 s (an Iridium PPP call) for a link with an ``up``
  command, 0 for one without (it is always up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # only its attributes are read; the config module is being reshaped
    from nosend_store.config import Link

__all__ = [
    "BYTES_PER_MEGABYTE",
    "COST_QUANTUM",
    "DEFAULT_RATE",
    "DEFAULT_SETUP_SECONDS",
    "Budget",
    "Endpoint",
    "Hours",
    "LinkPlan",
    "PlanError",
    "Waiting",
    "cost_of",
    "megabytes",
]

BYTES_PER_MEGABYTE = 1_000_000
COST_QUANTUM = Decimal("0.0001")
DEFAULT_RATE = 300.0
DEFAULT_SETUP_SECONDS = 20.0


class PlanError(ValueError):
    """A value for the link layer (hours, budget, probe address) could not be read."""


def megabytes(nbytes: int) -> Decimal:
    """``nbytes`` in megabytes of 1,000,000 bytes, exactly."""
    return Decimal(nbytes) / BYTES_PER_MEGABYTE


def cost_of(
    seconds: float, nbytes: int, cost_per_minute: Decimal, cost_per_megabyte: Decimal
) -> Decimal:
    """Minutes online x ``cost_per_minute`` + megabytes x ``cost_per_megabyte``.

    ``seconds`` counts to the millisecond (a float clock reading has noise below that),
    so the same cycle always costs the same; the sum is rounded once, at the end.
    """
    millis = Decimal(round(seconds * 1000))
    total = millis / 60_000 * cost_per_minute + megabytes(nbytes) * cost_per_megabyte
    return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and a TCP port (the probe target)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host:port`` or ``[v6-address]:port``."""
        match = re.fullmatch(r"\s*(?:\[([^\]]+)\]|([^\s:]+)):(\d{1,5})\s*", text)
        if not match:
            raise PlanError(f"not host:port: {text!r}")
        port = int(match.group(3))
        if not 0 < port < 65536:
            raise PlanError(f"port out of range: {text!r}")
        return cls(match.group(1) or match.group(2), port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Hours:
    """When a link may be used: windows of local wall-clock time, minutes since midnight.

    A window ``(start, end)`` with ``end <= start`` runs past midnight (``22:00-06:00``).
    No windows means at any time.
    """

    windows: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Hours:
        """``06:00-22:00, 23:30-01:00``; empty, ``always`` or ``any`` for any time."""
        text = text.strip()
        if text.lower() in ("", "always", "any"):
            return cls()
        windows = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", part)
            if not match:
                raise PlanError(f"not HH:MM-HH:MM: {part.strip()!r}")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
                raise PlanError(f"not a time of day: {part.strip()!r}")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start % 1440 == end % 1440:
                return cls()  # 00:00-24:00 and the like: the whole day
            windows.append((start % 1440, end % 1440))
        return cls(tuple(windows))

    @property
    def always(self) -> bool:
        """True when the link may be used at any time."""
        return not self.windows

    def allows(self, when: datetime) -> bool:
        """Whether ``when`` (its own wall-clock time) falls inside a window."""
        if not self.windows:
            return True
        minute = when.hour * 60 + when.minute
        for start, end in self.windows:
            if start < end and start <= minute < end:
                return True
            if end <= start and (minute >= start or minute < end):
                return True
        return False

    def window_end(self, when: datetime) -> datetime | None:
        """The first moment after ``when`` that no window allows (None: ``when`` is in no
        window, or the windows together cover every minute). Overlapping and adjoining
        windows count as one: the link is used until none allows it."""
        if not self.windows or not self.allows(when):
            return None
        limit = when + timedelta(days=2)
        moment = when
        while True:
            moment = self._latest_end(moment)
            if not self.allows(moment):
                return moment
            if moment >= limit:
                return None

    def _latest_end(self, when: datetime) -> datetime:
        """The latest end of the windows that hold ``when`` (one must)."""
        minute = when.hour * 60 + when.minute
        midnight = when.replace(second=0, microsecond=0) - timedelta(minutes=minute)
        ends = []
        for start, end in self.windows:
            if start < end and start <= minute < end:
                ends.append(midnight + timedelta(minutes=end))
            elif end <= start and minute >= start:
                ends.append(midnight + timedelta(days=1, minutes=end))
            elif end <= start and minute < end:
                ends.append(midnight + timedelta(minutes=end))
        return max(ends)

    def next_allowed(self, when: datetime) -> datetime:
        """The first moment at or after ``when`` that a window allows."""
        if self.allows(when):
            return when
        base = when.replace(second=0, microsecond=0)
        starts = []
        for start, _ in self.windows:
            for day in (0, 1):
                candidate = datetime.combine(
                    base.date() + timedelta(days=day), time(start // 60, start % 60),
                    tzinfo=when.tzinfo,
                )
                if candidate >= when:
                    starts.append(candidate)
        return min(starts)


@dataclass(frozen=True, slots=True)
class Budget:
    """A monthly cap on a link: money (its currency) or megabytes."""

    amount: Decimal
    unit: Literal["money", "MB"] = "money"

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``120`` or ``120.50`` (money), ``500 MB`` or ``2 GB`` (1 GB = 1000 MB)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
        if not match:
            raise PlanError(f"not a budget: {text!r}")
        amount, unit = Decimal(match.group(1)), match.group(2).upper()
        if unit == "":
            return cls(amount, "money")
        if unit == "MB":
            return cls(amount, "MB")
        if unit == "GB":
            return cls(amount * 1000, "MB")
        raise PlanError(f"budget unit must be MB or GB, or none for money: {text!r}")

    def exhausted(self, cost: Decimal, nbytes: int) -> bool:
        """Whether a month that has cost ``cost`` and moved ``nbytes`` reached the cap."""
        if self.unit == "MB":
            return megabytes(nbytes) >= self.amount
        return cost >= self.amount


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """One link as the link layer uses it (see the module docstring for units).

    ``up`` and ``down`` are argv lists run without a shell; an empty ``up`` means the
    link is always up and is never dialled (``down`` is then not run either).
    ``probe`` is where to check that the link carries traffic (None: the caller's
    default, the smarthost). ``max_size``: messages larger than this many bytes are not
    sent over this link (None: no cap).
    """

    name: str
    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    priority: int = 100
    cost_per_minute: Decimal = Decimal(0)
    cost_per_megabyte: Decimal = Decimal(0)
    up_timeout: float = 120.0
    max_online: float = 1800.0
    enabled: bool = True
    accounts: tuple[str, ...] = ()
    probe: Endpoint | None = None
    max_size: int | None = None
    hours: Hours = Hours()
    budget: Budget | None = None
    rate: float = DEFAULT_RATE
    setup_seconds: float = DEFAULT_SETUP_SECONDS

    @classmethod
    def from_link(
        cls,
        link: Link,
        *,
        probe: Endpoint | None = None,
        max_size: int | None = None,
        hours: Hours | None = None,
        budget: Budget | None = None,
        rate: float | None = None,
        setup_seconds: float | None = None,
    ) -> LinkPlan:
        """A plan from a ``[link NAME]`` section plus the keys it does not hold yet."""
        if setup_seconds is None:
            setup_seconds = DEFAULT_SETUP_SECONDS if link.up else 0.0
        return cls(
            name=link.name,
            up=tuple(link.up),
            down=tuple(link.down),
            priority=link.priority,
            cost_per_minute=link.cost_per_minute,
            cost_per_megabyte=link.cost_per_megabyte,
            up_timeout=link.up_timeout,
            max_online=link.max_online,
            enabled=link.enabled,
            accounts=tuple(link.accounts),
            probe=probe,
            max_size=max_size,
            hours=hours if hours is not None else Hours(),
            budget=budget,
            rate=rate if rate is not None else DEFAULT_RATE,
            setup_seconds=setup_seconds,
        )

    @property
    def dialled(self) -> bool:
        """True if the link is brought up by a command (False: always up)."""
        return bool(self.up)

    def cost(self, seconds: float, nbytes: int) -> Decimal:
        """What ``seconds`` online moving ``nbytes`` costs on this link."""
        return cost_of(seconds, nbytes, self.cost_per_minute, self.cost_per_megabyte)

    def carries(self, size: int) -> bool:
        """Whether a message of ``size`` bytes may go over this link (``max_size``)."""
        return self.max_size is None or size <= self.max_size

    def fetches(self, account: str) -> bool:
        """Whether ``account`` is fetched over this link (empty ``accounts``: all)."""
        return not self.accounts or account in self.accounts


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a cycle would move: the queue and the accounts to fetch.

    ``sizes_out``: the wire size of each queued message due to go. ``bytes_in``: what the
    caller expects to fetch (unknown before the call; 0 unless it has a guess).
    ``accounts``: the remote accounts to fetch. ``oldest``: when the oldest queued
    message was queued (epoch seconds; None if the queue is empty). ``urgent``: a message
    marked urgent waits.
    """

    sizes_out: tuple[int, ...] = ()
    bytes_in: int = 0
    accounts: tuple[str, ...] = ()
    oldest: float | None = None
    urgent: bool = False

    @property
    def has_work(self) -> bool:
        """Something to send or an account to fetch."""
        return bool(self.sizes_out) or bool(self.accounts)
