"""Values of a ``[link NAME]`` and ``[schedule]`` in ``mail.cfg``, and their parsers.

Owns: the value types :class:`Endpoint` (a probe target), :class:`Hours` (when a link
may be used), :class:`Budget` (a monthly cap), their ``parse`` class methods,
:func:`parse_times` (times of day), :func:`parse_rate` (a link's speed) and the unit
they share (:data:`BYTES_PER_MEGABYTE`, :func:`megabytes`). Errors are
:class:`LinkValueError` (a ``ValueError``) whose text names the bad value.

Why here and not in ``nosend_link``: ``mail.cfg`` is parsed by ``nosend_store``, which
may not import the link layer above it; the link layer imports these and re-exports
them (``nosend_link.plan``, ``nosend_link.schedule``), so both read a value the same way.

Must not: read files or the clock, or know about lines and sections (the config parser
prefixes the key and the line).

Units: a megabyte is 1,000,000 bytes, as airtime plans count; a rate is bytes per
second on the wire (``2400 bit/s`` is 300).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = [
    "BYTES_PER_MEGABYTE",
    "Budget",
    "Endpoint",
    "Hours",
    "LinkValueError",
    "megabytes",
    "parse_rate",
    "parse_times",
]

BYTES_PER_MEGABYTE = 1_000_000


class LinkValueError(ValueError):
    """A link or schedule value (hours, budget, probe address, times, rate) could not be
    read; the text says which and why."""


def megabytes(nbytes: int) -> Decimal:
    """``nbytes`` in megabytes of 1,000,000 bytes, exactly."""
    return Decimal(nbytes) / BYTES_PER_MEGABYTE


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
            raise LinkValueError(f"not host:port: {text!r}")
        port = int(match.group(3))
        if not 0 < port < 65536:
            raise LinkValueError(f"port out of range: {text!r}")
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
        windows: list[tuple[int, int]] = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", part)
            if not match:
                raise LinkValueError(f"not HH:MM-HH:MM: {part.strip()!r}")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
                raise LinkValueError(f"not a time of day: {part.strip()!r}")
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
            raise LinkValueError(f"not a budget: {text!r}")
        amount, unit = Decimal(match.group(1)), match.group(2).upper()
        if unit == "":
            return cls(amount, "money")
        if unit == "MB":
            return cls(amount, "MB")
        if unit == "GB":
            return cls(amount * 1000, "MB")
        raise LinkValueError(f"budget unit must be MB or GB, or none for money: {text!r}")

    def exhausted(self, cost: Decimal, nbytes: int) -> bool:
        """Whether a month that has cost ``cost`` and moved ``nbytes`` reached the cap."""
        if self.unit == "MB":
            return megabytes(nbytes) >= self.amount
        return cost >= self.amount


def parse_times(text: str) -> tuple[time, ...]:
    """``06:00, 18:00`` -> the times of day, sorted, each once; empty text -> none."""
    found = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", part)
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise LinkValueError(f"not a time of day (HH:MM): {part!r}")
        found.add(time(int(match.group(1)), int(match.group(2))))
    return tuple(sorted(found))


# Bits or bytes per second, with an optional SI prefix (a modem's 2.4 kbit/s is 2,400
# bit/s: line rates count in powers of 1000).
_RATE_RE = re.compile(
    r"\s*(\d+(?:\.\d+)?)\s*(?:([kKmMgG]?)(bit|bps|b|B)(?:/s)?)?\s*"
)
_PREFIX = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_rate(text: str) -> float:
    """A link's speed in bytes per second: ``300`` (bytes), ``300 B/s``, ``2400 bit/s``,
    ``2.4 kbit/s``, ``64kbps``, ``1.5 Mbit/s``. ``b``, ``bit`` and ``bps`` are bits,
    ``B`` bytes; prefixes are powers of 1000. Must be more than 0."""
    match = _RATE_RE.fullmatch(text)
    if not match:
        raise LinkValueError(f"not a rate (e.g. 300 B/s, 2400 bit/s, 64 kbit/s): {text!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        raise LinkValueError(f"not a rate: {text!r}") from None
    unit = match.group(3) or "B"
    value = number * _PREFIX[(match.group(2) or "").lower()]
    if unit != "B":
        value /= 8
    if value <= 0:
        raise LinkValueError(f"a rate must be more than 0: {text!r}")
    return float(value)
